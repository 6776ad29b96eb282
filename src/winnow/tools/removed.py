"""``winnow inspect removed``: the rows a grouping stage's reduce side set aside.

A reduce side (``winnow.grouping``) may commit, next to the rows it keeps, the
rows it removed (exact_dedup: each duplicate with the id it duplicates), as a
second verified artifact of each partition, listed in the partition's
checkpoint (``removed``). This reads them back for one job: the job's record
names its reduce side's fingerprint, its run manifest the partitions.
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
    reduce = [s for s in record.get("stages") or [] if str(s.get("name")).endswith(".reduce")]
    if not reduce or not record.get("manifest"):
        raise UsageError(f"job {record['job_id']} has no grouping stage output to inspect")
    stage, fingerprint = reduce[0]["name"], reduce[0]["fingerprint"]
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


def _job(state: State, job_id: str | None) -> dict[str, Any]:
    if job_id is not None:
        return state.read_job(job_id)
    for job in state.list_jobs():
        stages = job.get("stages") or []
        if job.get("manifest") and any(str(s.get("name")).endswith(".reduce") for s in stages):
            return job
    raise UsageError(f"state {state.display()!r} has no finished job with a grouping stage")
