"""Delta Lake through ``deltalake``: Parquet files written and verified, then one commit."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import Any

import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from winnow.errors import UsageError
from winnow.extras import require
from winnow.storage.fs import fsync_dir, join
from winnow.tools.export_file import write_checked
from winnow.tools.sinks import Ready, Tables
from winnow.tools.sinks.history import TableCommit

# data files of an export killed before it made the table: a retry writes beside them
_LEFTOVER = re.compile(r"winnow-[0-9a-f]{12}-\d{5}\.parquet")


class DeltaSink:
    """A Delta table at a local path; made by the first export."""

    def __init__(self, path: str, to: str) -> None:
        self.dl: Any = require("deltalake", "--format delta")
        self.path = path
        self.where = f"Delta table {to}"
        self.table: Any = None
        if self.dl.DeltaTable.is_deltatable(path):
            self.table = self.dl.DeltaTable(path)
        elif os.path.isdir(path) and not all(_LEFTOVER.fullmatch(n) for n in os.listdir(path)):
            raise UsageError(
                f"--to {to!r} is a folder with files and no _delta_log: not a Delta table; "
                "nothing was written. Fix: pass a new folder or an existing Delta table"
            )

    def exists(self) -> bool:
        """Whether the table exists."""
        return self.table is not None

    def location(self) -> str:
        """The table's folder."""
        return self.path

    def schema(self) -> pa.Schema:
        """The table's schema, as Arrow."""
        return pa.schema(self.table.schema().to_arrow())

    def rows(self) -> int:
        """Rows in the table's current version (Parquet footers: exact)."""
        return int(self.table.to_pyarrow_dataset().count_rows())

    def history(self) -> list[TableCommit]:
        """Winnow's commits, from the commit infos in the log, oldest first."""
        found = (TableCommit.parse(str(info["version"]), info) for info in self.table.history())
        return [c for c in reversed(list(found)) if c is not None]

    def append(
        self,
        source: pa.Schema,
        tables: Tables,
        properties: dict[str, str],
        ready: Ready,
    ) -> None:
        """One Parquet file per batch in the table's folder, each read back; then one commit."""
        if self.table is None:
            delta_schema = self._new_schema(source)
            schema = pa.schema(delta_schema.to_arrow())
        else:
            delta_schema, schema = self.table.schema(), self.schema()
        os.makedirs(self.path, exist_ok=True)
        fs, stem, actions = LocalFileSystem(), f"winnow-{uuid.uuid4().hex[:12]}", []
        for n, table in enumerate(tables(schema)):
            if table.num_rows == 0:
                continue
            name = f"{stem}-{n:05d}.parquet"
            written = write_checked(fs, join(self.path, name), [table], "parquet", schema, name)
            stats = json.dumps({"numRecords": written.rows})
            now = int(time.time() * 1000)
            actions.append(self.dl.transaction.AddAction(name, written.bytes, {}, now, True, stats))
        fsync_dir(self.path)
        ready(sum(json.loads(a.stats)["numRecords"] for a in actions))  # each file read back
        commit = self.dl.CommitProperties(custom_metadata=properties)
        if self.table is None:
            self.dl.transaction.create_table_with_add_actions(
                self.path, delta_schema, actions, mode="error", commit_properties=commit
            )
        else:
            self.table.create_write_transaction(
                actions, "append", delta_schema, commit_properties=commit
            )

    def _new_schema(self, source: pa.Schema) -> Any:
        try:
            return self.dl.Schema.from_arrow(source)
        except Exception as exc:  # deltalake raises its own error types for unmappable types
            raise UsageError(
                f"{self.where}: the job's output has a column type Delta cannot store ({exc}); "
                "nothing was written. Fix: cast it in the pipeline, or export as Parquet"
            ) from None
