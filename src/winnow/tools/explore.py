"""Exploring a run from Python: its batches as a table, its output, samples per stage.

What a notebook (``notebooks/explore_artifacts.ipynb``) and ``winnow report``
use; everything reads the state and artifacts, nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from winnow.errors import UsageError
from winnow.records import BatchStatus
from winnow.storage import artifacts
from winnow.storage.artifacts import ArtifactRef, ArtifactStore
from winnow.storage.fs import resolve
from winnow.storage.state import State
from winnow.tools.inspect import stage_order

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
    "job_id": pa.string(),
    "source_file": pa.string(),
    "source_start": pa.int64(),
}


def batch_records(state: State, job_id: str | None = None) -> pa.Table:
    """One row per committed (stage, batch) checkpoint, optionally of one job only.

    Columns: stage, key, batch, status, attempt, rows in/out, bad records,
    started_at (epoch s), duration_s, process_s, commit_s, artifact bytes and
    digest, node, the job that wrote it, source file and first row.

    With ``job_id``, only what that job computed: nothing for a rerun that
    skipped every batch (``job_batches`` has what its output is made of).
    """
    store = state.checkpoints()
    return _records_table(
        rec
        for stage in store.stages()
        for rec in store.load(stage).records.values()
        if job_id is None or rec.get("job_id") == job_id
    )


def latest_job(state: State, pipeline: str) -> str:
    """The id of a pipeline's newest finished job (succeeded, failed or cancelled).

    Raises:
        UsageError: the state has no finished job of that pipeline.
    """
    for job in state.list_jobs():
        if job.get("pipeline") == pipeline and job.get("finished_at"):
            return str(job["job_id"])
    raise UsageError(
        f"no finished {pipeline} job in {state.display()}: run "
        f"`uv run winnow run {pipeline} --profile local-cpu` first"
    )


def job_batches(state: State, job_id: str) -> pa.Table:
    """One job's batches: those it computed and those its output is made of.

    The same columns as ``batch_records``, of the job's own stages only (never
    another pipeline's); ``job_id`` says which job computed each batch, so a
    rerun's skipped batches point to the earlier jobs that did the work.
    Stages are in pipeline order, then batches in source order.
    """
    job = state.read_job(job_id)
    order = {name: i for i, name in enumerate(stage_order(job))}
    table = _records_table(job_checkpoints(state, job))
    ranks = pa.array([order.get(s, len(order)) for s in table.column("stage").to_pylist()])
    table = table.append_column("_rank", ranks)
    table = table.sort_by(
        [("_rank", "ascending"), ("source_file", "ascending"), ("source_start", "ascending")]
    )
    return table.drop_columns(["_rank"])


def job_checkpoints(state: State, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The checkpoint records of one job: those it wrote and those its output is made of.

    The output's records are followed stage by stage from the job's source
    batches (its manifest). A stage's record belongs to the output when its input is the previous
    stage's (the source batch, for the first stage) and its fingerprint is the
    job's; so a stage name another pipeline shares brings none of its records.
    """
    job_id = job["job_id"]
    fingerprints = {s["name"]: s.get("fingerprint") for s in job.get("stages") or []}
    inputs = _source_batches(state, job)
    store = state.checkpoints()
    present = set(store.stages())
    out: list[dict[str, Any]] = []
    for stage in stage_order(job):
        if stage not in present:
            inputs = set()
            continue
        fingerprint = fingerprints.get(stage)
        feeds_next: set[str] = set()
        for rec in store.load(stage).records.values():
            made_of = rec.get("input_key") in inputs and (
                fingerprint is None or rec.get("fingerprint") in (None, fingerprint)
            )
            if made_of or rec.get("job_id") == job_id:
                out.append(rec)
            if made_of and rec["status"] == BatchStatus.SUCCEEDED:
                feeds_next.add(rec["key"])
        inputs = feeds_next
    return out


def job_quarantined(state: State, job_id: str, limit: int | None = None) -> pa.Table:
    """The quarantined bad records of one job's input (those of its own batches only)."""
    from winnow.tools.quarantine import quarantine_of

    records = job_checkpoints(state, state.read_job(job_id))
    return quarantine_of(records, state.storage_options, limit)


def _source_batches(state: State, job: dict[str, Any]) -> set[str]:
    """The source batch keys of a job's run, from its manifest (none without one)."""
    if not job.get("manifest"):
        return set()
    from winnow.jobs import read_manifest

    try:
        manifest = read_manifest(job["manifest"], state.storage_options)
    except FileNotFoundError:  # the output was moved or removed; what the job wrote remains
        return set()
    return {e["batch"] for e in manifest.get("batches") or [] if e.get("batch")}


def _records_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for rec in records:
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
