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
        with open_url(to, "wb", **(storage_options or {})) as fh:
            writer = None
            for e in entries:
                table = store_for(e["artifact"]["uri"], stores, storage_options).read(e["artifact"])
                rows += table.num_rows
                if to.endswith(".jsonl"):
                    for batch in table.to_batches():
                        fh.write(serialize(batch, "jsonl"))
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(fh, table.schema, compression="zstd")
                writer.write_table(table)
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
