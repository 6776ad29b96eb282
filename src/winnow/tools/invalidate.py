"""Invalidation: mark what one stage version produced, so the next run recomputes it.

For when a stage's output turned out wrong without its code, parameters or
version changing (a model file swapped under it, a bug found in a pinned
stage): the selected SUCCEEDED checkpoints get a newer INVALIDATED record, the
artifacts stay where they are, and the next run recomputes exactly those
batches and, through their new keys' inputs, the stages after them.
"""

from __future__ import annotations

import time
from typing import Any

from winnow.errors import UsageError
from winnow.records import BatchStatus
from winnow.storage.state import State, event


def invalidate(
    state: State,
    stage: str,
    version: str | None = None,
    fingerprint: str | None = None,
    job_id: str | None = None,
    everything: bool = False,
) -> dict[str, Any]:
    """Mark the stage's committed batches that match every selector given as INVALIDATED.

    Args:
        state: the state root.
        stage: the stage's name.
        version: only batches committed by this stage version.
        fingerprint: only batches committed under a fingerprint starting with this.
        job_id: only batches committed by this job.
        everything: select every committed batch of the stage (no other selector needed).

    Returns:
        ``invalidated`` (count), ``untracked`` (committed before versions were
        recorded, so not matched by ``version``/``fingerprint``) and the selectors.
    """
    if not (version or fingerprint or job_id or everything):
        raise UsageError(
            f"say what to invalidate of stage {stage!r}: --version V, --fingerprint PREFIX, "
            "--job ID, or --all"
        )
    store = state.checkpoints(job_id=f"invalidate-{int(time.time())}")
    if stage not in store.stages():
        raise UsageError(
            f"state {state.display()!r} has no checkpoints of a stage {stage!r} "
            f"(it has: {', '.join(store.stages()) or 'none'})"
        )
    selected, untracked = 0, 0
    for rec in store.load(stage).records.values():
        if rec["status"] != BatchStatus.SUCCEEDED:
            continue
        if (version or fingerprint) and "fingerprint" not in rec:
            untracked += 1
            continue
        if version is not None and str(rec.get("stage_version")) != version:
            continue
        if fingerprint is not None and not str(rec.get("fingerprint")).startswith(fingerprint):
            continue
        if job_id is not None and rec.get("job_id") != job_id:
            continue
        store.append(
            {**rec, "status": BatchStatus.INVALIDATED, "ts": time.time(), "invalidated": True}
        )
        selected += 1
    store.flush()
    selectors = {
        "version": version,
        "fingerprint": fingerprint,
        "of_job": job_id,
        "all": everything,
    }
    state.append_events([event("invalidated", "", stage=stage, batches=selected, **selectors)])
    return {"stage": stage, "invalidated": selected, "untracked": untracked, **selectors}
