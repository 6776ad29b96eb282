"""``winnow inspect removed``: the rows a grouping or rejoin stage set aside.

A reduce side (``winnow.grouping``), or a rejoin stage (``winnow.rejoin``),
may commit, next to the rows it keeps, the rows it removed (exact_dedup: each
duplicate with the id it duplicates) as a second verified artifact of the
batch, listed in its checkpoint (``removed``). This reads them back for one
job: the job's record names the fingerprint of the stage that starts its last
segment, its run manifest that segment's batches.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from winnow.errors import IntegrityError, UsageError
from winnow.plan import chain_key
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.manifests import read_manifest
from winnow.storage.state import State


def removed(state: State, job_id: str | None = None, limit: int | None = None) -> pa.Table:
    """The removed rows of a job's grouping stage, partition by partition.

    Args:
        state: the state the job ran on.
        job_id: the job (default: the newest job with a grouping stage).
        limit: at most this many rows.

    Raises:
        UsageError: no such job, or it has no grouping stage or no manifest.
        IntegrityError: a removed-rows artifact is missing or damaged.
    """
    record = _job(state, job_id)
    starts = _segment_starts(record)
    if not starts or not record.get("manifest"):
        raise UsageError(f"job {record['job_id']} has no grouping stage output to inspect")
    # The run's output batches are the last segment's: their keys chain to its first stage.
    stage, fingerprint = starts[-1]["name"], starts[-1]["fingerprint"]
    records = state.checkpoints().load(stage).records
    stores: dict[str, ArtifactStore] = {}
    tables: list[pa.Table] = []
    for entry in read_manifest(record["manifest"], state.storage_options)["batches"]:
        rec: dict[str, Any] | None = records.get(chain_key(fingerprint, entry["batch"]))
        ref = (rec or {}).get("removed")
        if ref is None:
            continue
        store = ArtifactStore.for_uri(ref["uri"], state.storage_options, stores)
        try:
            tables.append(store.read(ref))
        except (IntegrityError, FileNotFoundError) as exc:
            raise IntegrityError(
                f"the removed-rows artifact of stage {stage} ({ref['uri']}) cannot be read: "
                f"{exc}. Fix: run `winnow verify --full`, then rerun the pipeline"
            ) from None
        if limit is not None and sum(t.num_rows for t in tables) >= limit:
            break
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="default")
    return table.slice(0, limit) if limit is not None else table


def _segment_starts(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's stages that start a segment after a barrier: reduce sides and rejoin stages."""
    rejoin = {str(r["stage"]) for r in record.get("rejoins") or []}
    return [
        s
        for s in record.get("stages") or []
        if str(s.get("name")).endswith(".reduce") or s.get("name") in rejoin
    ]


def _job(state: State, job_id: str | None) -> dict[str, Any]:
    if job_id is not None:
        return state.read_job(job_id)
    for job in state.list_jobs():
        if job.get("manifest") and _segment_starts(job):
            return job
    raise UsageError(f"state {state.display()!r} has no finished job with a grouping stage")
