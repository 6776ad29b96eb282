"""Lance through ``pylance``: fragments written, then one commit of a transaction."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from winnow.errors import UsageError
from winnow.extras import require
from winnow.tools.sinks import Ready, Tables
from winnow.tools.sinks.history import TableCommit


class LanceSink:
    """A Lance dataset at a local path; made by the first export."""

    def __init__(self, path: str, to: str) -> None:
        self.lance: Any = require("lance", "--format lance")
        self.path = path
        self.where = f"Lance dataset {to}"
        self.table: Any = None
        # "data" alone: the fragments of an export killed before it made the dataset
        if os.path.isdir(path) and set(os.listdir(path)) - {"data"}:
            try:
                self.table = self.lance.dataset(path)
            except (ValueError, OSError):
                raise UsageError(
                    f"--to {to!r} is a folder with files that is not a Lance dataset; "
                    "nothing was written. Fix: pass a new folder or an existing Lance dataset"
                ) from None

    def exists(self) -> bool:
        """Whether the dataset exists."""
        return self.table is not None

    def location(self) -> str:
        """The table's folder."""
        return self.path

    def schema(self) -> pa.Schema:
        """The dataset's schema."""
        return self.table.schema

    def rows(self) -> int:
        """Rows in the latest version."""
        return int(self.table.count_rows())

    def history(self) -> list[TableCommit]:
        """Winnow's commits, from each version's transaction properties, oldest first."""
        found = []
        for version in self.table.versions():
            number = version["version"]
            transaction = self.table.read_transaction(number)
            properties = transaction.transaction_properties if transaction else None
            commit = TableCommit.parse(str(number), properties)
            if commit is not None:
                found.append(commit)
        return found

    def append(
        self,
        source: pa.Schema,
        tables: Tables,
        properties: dict[str, str],
        ready: Ready,
    ) -> None:
        """Write the fragments (uncommitted), then commit their transaction once."""
        schema = source if self.table is None else self.schema()
        reader = pa.RecordBatchReader.from_batches(schema, _batches(tables(schema)))
        fragments: Any = require("lance.fragment", "--format lance")
        transaction = fragments.write_fragments(
            reader, self.table if self.table is not None else self.path, schema,
            return_transaction=True, mode="append",
        )  # fmt: skip
        transaction.transaction_properties = properties
        ready(sum(f.physical_rows for f in transaction.operation.fragments))
        self.lance.LanceDataset.commit(
            self.path, transaction, read_version=transaction.read_version
        )


def _batches(tables: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
    for table in tables:
        yield from table.to_batches()
