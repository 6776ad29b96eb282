"""A run's output: export as one dataset, and quarantined records."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.datatools import store_for
from winnow.errors import UsageError
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.checkpoints import SUCCEEDED
from winnow.storage.formats import serialize
from winnow.storage.fs import join, open_url, resolve
from winnow.storage.state import State


def export(
    state: State,
    job_id: str,
    to: str,
    fmt: str = "parquet",
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a job's output as one dataset in source order.

    ``to`` ending in ``.parquet``/``.jsonl`` gets one file; any other URL is a
    folder of ``part-NNNNN`` files, numbered in source order.
    """
    storage_options = state.storage_options if storage_options is None else storage_options
    if fmt not in ("parquet", "jsonl"):
        raise UsageError(f"--format {fmt!r}: choose parquet or jsonl")
    record = state.read_job(job_id)
    if not record.get("manifest"):
        raise UsageError(f"job {job_id} has no output manifest (status {record.get('status')})")
    fs_m, path_m = resolve(record["manifest"], storage_options)
    manifest = json.loads(fs_m.cat_file(path_m))
    entries = [e for e in manifest["batches"] if e.get("artifact")]
    missing = len(manifest["batches"]) - len(entries)
    stores: dict[str, ArtifactStore] = {}
    rows = 0
    single = to.endswith((".parquet", ".jsonl"))
    fs, root = resolve(to, storage_options)
    written: list[str] = []
    if single:
        fs.makedirs(root.rsplit("/", 1)[0], exist_ok=True)
        schema = None
        if to.endswith(".parquet") and entries:
            # Batches of a schema-less pipeline may differ (a column all null in one):
            # one file needs one schema, so unify first (metadata only).
            schema = pa.unify_schemas(
                [
                    _artifact_schema(store_for(e["artifact"]["uri"], stores, storage_options), e)
                    for e in entries
                ],
                promote_options="permissive",
            )
        with open_url(to, "wb", **(storage_options or {})) as fh:
            writer = None
            for e in entries:
                table = store_for(e["artifact"]["uri"], stores, storage_options).read(e["artifact"])
                rows += table.num_rows
                if to.endswith(".jsonl"):
                    for batch in table.to_batches():
                        fh.write(serialize(batch, "jsonl"))
                    continue
                assert schema is not None
                if writer is None:
                    writer = pq.ParquetWriter(fh, schema, compression="zstd")
                writer.write_table(_conform(table, schema))
            if writer is not None:
                writer.close()
        written.append(to)
    else:
        fs.makedirs(root, exist_ok=True)
        for n, e in enumerate(entries):
            table = store_for(e["artifact"]["uri"], stores, storage_options).read(e["artifact"])
            rows += table.num_rows
            name = join(to.rstrip("/"), f"part-{n:05d}.{fmt}")
            with open_url(name, "wb", **(storage_options or {})) as fh:
                if fmt == "jsonl":
                    for batch in table.to_batches():
                        fh.write(serialize(batch, "jsonl"))
                else:
                    pq.write_table(table, fh, compression="zstd")
            written.append(name)
    return {"job_id": job_id, "to": to, "rows": rows, "files": written, "missing_batches": missing}


def quarantined(
    state: State, limit: int | None = None, storage_options: dict[str, Any] | None = None
) -> pa.Table:
    """Quarantined bad records (file, row, error, raw line) of every committed batch."""
    storage_options = state.storage_options if storage_options is None else storage_options
    store = state.checkpoints()
    tables = []
    stores: dict[str, ArtifactStore] = {}
    for stage in store.stages():
        for rec in store.load(stage).records.values():
            q = rec.get("quarantine")
            if q and rec["status"] == SUCCEEDED:
                ref = q["artifact"]
                tables.append(store_for(ref["uri"], stores, storage_options).read(ref))
                if limit is not None and sum(t.num_rows for t in tables) >= limit:
                    break
    if not tables:
        return pa.table({"file": [], "row": [], "error": [], "raw": []})
    table = pa.concat_tables(tables, promote_options="default")
    return table.slice(0, limit) if limit is not None else table


def _artifact_schema(store: ArtifactStore, entry: dict[str, Any]) -> pa.Schema:
    data = store.read_bytes(entry["artifact"]["uri"])
    if entry["artifact"]["format"] == "parquet":
        return pq.read_schema(pa.BufferReader(data))
    return store.read(entry["artifact"]).schema


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order (absent ones as nulls)."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
