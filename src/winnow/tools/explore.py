"""Exploring a run from Python: its batches as a table, its output, samples per stage.

What a notebook (``notebooks/explore_artifacts.ipynb``) and ``winnow report``
use; everything reads the state and artifacts, nothing runs.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from winnow.errors import UsageError
from winnow.records import BatchStatus
from winnow.storage import artifacts
from winnow.storage.artifacts import ArtifactRef, ArtifactStore
from winnow.storage.fs import resolve
from winnow.storage.state import State

RECORD_COLUMNS = {
    "stage": pa.string(),
    "key": pa.string(),
    "batch": pa.string(),
    "status": pa.string(),
    "attempt": pa.int64(),
    "rows_in": pa.int64(),
    "rows_out": pa.int64(),
    "bad_records": pa.int64(),
    "started_at": pa.float64(),
    "duration_s": pa.float64(),
    "process_s": pa.float64(),
    "commit_s": pa.float64(),
    "bytes": pa.int64(),
    "digest": pa.string(),
    "node": pa.string(),
    "source_file": pa.string(),
    "source_start": pa.int64(),
}


def batch_records(state: State, job_id: str | None = None) -> pa.Table:
    """One row per committed (stage, batch) checkpoint, optionally of one job only.

    Columns: stage, key, batch, status, attempt, rows in/out, bad records,
    started_at (epoch s), duration_s, process_s, commit_s, artifact bytes and
    digest, node, source file and first row.
    """
    store = state.checkpoints()
    rows: list[dict[str, Any]] = []
    for stage in store.stages():
        for rec in store.load(stage).records.values():
            if job_id is not None and rec.get("job_id") != job_id:
                continue
            art = rec.get("artifact") or {}
            src = rec.get("source") or {}
            rows.append(
                {
                    **{k: rec.get(k) for k in RECORD_COLUMNS if k in rec},
                    "bytes": art.get("bytes"),
                    "digest": art.get("digest"),
                    "source_file": src.get("file"),
                    "source_start": src.get("start"),
                }
            )
    schema = pa.schema(list(RECORD_COLUMNS.items()))
    table = pa.Table.from_pylist(
        [{k: r.get(k) for k in RECORD_COLUMNS} for r in rows], schema=schema
    )
    return table.sort_by([("source_file", "ascending"), ("source_start", "ascending")])


def output_dataset(state: State, job_id: str) -> ds.Dataset:
    """A job's output as a ``pyarrow.dataset.Dataset`` over its artifacts, in source order.

    Reading it does not re-hash the artifacts; ``winnow.output_table`` does.
    """
    record = state.read_job(job_id)
    if not record.get("manifest"):
        raise UsageError(f"job {job_id} has no output manifest (status {record.get('status')})")
    options = state.storage_options
    fs, path = resolve(record["manifest"], options)
    import json

    manifest = json.loads(fs.cat_file(path))
    refs = [ArtifactRef(**e["artifact"]) for e in manifest["batches"] if e.get("artifact")]
    if not refs:
        return ds.dataset(pa.table({}))
    return artifacts.dataset(refs, options)


def stage_samples(state: State, batch: str, rows: int = 5) -> dict[str, pa.Table]:
    """The first ``rows`` records of one batch after each stage (verified reads).

    ``batch`` is a source batch key (or 8+ hex characters of it); the first
    entry, ``source``, is the batch as read from its file.
    """
    from winnow import sources
    from winnow.tools.inspect import inspect_batch

    info = inspect_batch(state, batch)
    by_input = {r.get("input_key"): r for r in info["stages"]}
    stages = []  # first stage to last, following each record's input key
    current = by_input.get(info["batch"])
    while current is not None:
        stages.append(current)
        current = by_input.get(current["key"])
    out: dict[str, pa.Table] = {}
    first = stages[0]
    src = first.get("source") or {}
    if src.get("file"):
        try:
            [file] = sources.discover([src["file"]], state.storage_options)
            table, _ = next(
                sources.read(file, [(src["start"], src["stop"])], None, state.storage_options)
            )
            out["source"] = pa.Table.from_batches([table]).slice(0, rows)
        except Exception:  # the source may have moved; the stages' artifacts remain
            pass
    stores: dict[str, ArtifactStore] = {}
    for rec in stages:
        art = rec.get("artifact")
        if rec["status"] == BatchStatus.SUCCEEDED and art:
            out[rec["stage"]] = (
                ArtifactStore.for_uri(art["uri"], state.storage_options, stores)
                .read(art)
                .slice(0, rows)
            )
    return out
