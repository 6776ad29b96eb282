"""Apache Iceberg through ``pyiceberg``: data files staged in a transaction, then one commit.

The catalog is a SQLite SQL catalog in a local folder (``catalog.db`` and a
``warehouse`` folder beside it, made on first use), or any catalog pyiceberg
loads by name (``~/.pyiceberg.yaml``, ``PYICEBERG_CATALOG__<NAME>__*``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from winnow.errors import UsageError
from winnow.extras import require
from winnow.tools.sinks import Ready, Tables
from winnow.tools.sinks.history import TableCommit

CATALOG_DB = "catalog.db"
WAREHOUSE = "warehouse"


class IcebergSink:
    """An Iceberg table ``namespace.name`` in a catalog; made by the first export."""

    def __init__(self, name: str, folder: str | None, catalog: str | None) -> None:
        self.ice: Any = require("pyiceberg.catalog", "--format iceberg")
        self.name = name
        self.folder = folder
        self.catalog_name = catalog
        self.where = (
            f"Iceberg table {name} in catalog {catalog}"
            if catalog is not None
            else f"Iceberg table {name} in {folder}"
        )
        if (
            folder is not None
            and os.path.isdir(folder)
            and os.listdir(folder)
            and not os.path.exists(os.path.join(folder, CATALOG_DB))
        ):
            raise UsageError(
                f"--to {folder!r} holds files and no {CATALOG_DB}: not a folder an "
                "Iceberg export made; nothing was written. Fix: pass a new folder"
            )
        self._catalog: Any = None
        self.table: Any = self._load() if self._has_catalog() else None

    def _has_catalog(self) -> bool:
        return self.folder is None or os.path.exists(os.path.join(self.folder, CATALOG_DB))

    def catalog(self) -> Any:
        """The catalog, opened (a folder's SQLite catalog is made here on first use)."""
        if self._catalog is None:
            if self.folder is None:
                try:
                    self._catalog = self.ice.load_catalog(self.catalog_name)
                except ValueError as exc:  # pyiceberg's word for a catalog it cannot set up
                    raise UsageError(
                        f"--catalog {self.catalog_name!r}: {exc}. Fix: configure it in "
                        "~/.pyiceberg.yaml or PYICEBERG_CATALOG__<NAME>__* variables"
                    ) from None
            else:
                sql = require("pyiceberg.catalog.sql", "--format iceberg")
                os.makedirs(os.path.join(self.folder, WAREHOUSE), exist_ok=True)
                self._catalog = sql.SqlCatalog(
                    "winnow",
                    uri=f"sqlite:///{os.path.join(self.folder, CATALOG_DB)}",
                    warehouse=f"file://{os.path.join(self.folder, WAREHOUSE)}",
                )
        return self._catalog

    def _load(self) -> Any:
        exceptions = require("pyiceberg.exceptions", "--format iceberg")
        try:
            return self.catalog().load_table(self.name)
        except (exceptions.NoSuchTableError, exceptions.NoSuchNamespaceError):
            return None

    def exists(self) -> bool:
        """Whether the table exists."""
        return self.table is not None

    def location(self) -> str:
        """The table's location (in the --to catalog: ``file:///.../warehouse/<namespace>/<name>``)."""
        return str(self.table.location())

    def schema(self) -> pa.Schema:
        """The table's schema, as Arrow."""
        return self.table.schema().as_arrow()

    def rows(self) -> int:
        """Rows in the current snapshot (a scan's count: data files less deletes)."""
        return int(self.table.scan().count()) if self.table.current_snapshot() else 0

    def history(self) -> list[TableCommit]:
        """Winnow's snapshots in the main branch's lineage (parent links), oldest first."""
        found = []
        snapshot = self.table.current_snapshot()
        while snapshot is not None:
            summary = snapshot.summary.additional_properties if snapshot.summary else None
            commit = TableCommit.parse(str(snapshot.snapshot_id), summary)
            if commit is not None:
                found.append(commit)
            parent = snapshot.parent_snapshot_id
            snapshot = None if parent is None else self.table.snapshot_by_id(parent)
        return found[::-1]

    def append(
        self,
        source: pa.Schema,
        tables: Tables,
        properties: dict[str, str],
        ready: Ready,
    ) -> None:
        """Stage the data files in one transaction (a new table's creation too), then commit."""
        if self.table is None:
            self.catalog().create_namespace_if_not_exists(self.name.rsplit(".", 1)[0])
            tx = self.catalog().create_table_transaction(self.name, schema=source)
        else:
            tx = self.table.transaction()
        schema = tx.table_metadata.schema().as_arrow()
        reader = pa.RecordBatchReader.from_batches(schema, _batches(tables(schema)))
        tx.append(reader, snapshot_properties=properties)
        ready(_staged_rows(tx, self.table))
        tx.commit_transaction()


def _batches(tables: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
    for table in tables:
        yield from table.to_batches()


def _staged_rows(tx: Any, table: Any) -> int:
    """Rows the transaction's new snapshot adds (none when it staged no snapshot)."""
    staged = tx.table_metadata.current_snapshot()
    before = None if table is None else table.current_snapshot()
    if staged is None or (before is not None and staged.snapshot_id == before.snapshot_id):
        return 0
    return int(staged.summary.get("added-records") or 0) if staged.summary else 0
