"""``winnow gc``: artifacts no checkpoint references, and stale temporaries."""

from __future__ import annotations

import time
from typing import Any

from winnow.records import JobStatus, record_artifacts
from winnow.storage.artifacts import ArtifactStore, StoredFile, output_store_url
from winnow.storage.liveness import Liveness, liveness
from winnow.storage.state import State
from winnow.tools.verify import verify_state as verify_state

GC_GRACE_S = 3600.0


def gc(
    state: State,
    apply: bool = False,
    grace_s: float = GC_GRACE_S,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Artifacts no checkpoint references, and stale temporaries; removed with ``apply``.

    Anything younger than ``grace_s`` is kept: a live run publishes an artifact
    before its checkpoint is flushed, so a fresh unreferenced artifact may be
    one a run is about to commit. The input chunks of a live run over data in
    memory are kept whatever their age (an equal chunk committed long ago is
    reused, not rewritten); a finished run's are not: its next run commits
    them again.
    """
    storage_options = state.storage_options if storage_options is None else storage_options
    referenced, roots = _references(state)
    running = [
        j
        for j in state.list_jobs()
        if j.get("status") == JobStatus.RUNNING
        and liveness(j.get("pid"), j.get("host")) is not Liveness.GONE
    ]
    live = [j["job_id"] for j in running]
    for job in running:
        referenced.update(
            ArtifactStore.digest_of(u) for u in (job.get("input_chunks") or {}).values()
        )
    now = time.time()
    candidates: list[dict[str, Any]] = []
    kept_young = 0
    for root in sorted(roots):
        art = ArtifactStore(root, storage_options)
        mine: list[dict[str, Any]] = []
        for kind, temporary in (("unreferenced", False), ("temporary", True)):
            for f in art.files(temporary=temporary):
                if not temporary and f.digest in referenced:
                    continue
                if now - _written(f) < grace_s:
                    kept_young += 1
                    continue
                mine.append({"kind": kind, "path": f.path, "bytes": f.bytes})
        if apply:
            for c in mine:
                art.remove(c["path"])
        candidates.extend(mine)
    return {
        "applied": apply,
        "grace_s": grace_s,
        "referenced": len(referenced),
        "candidates": candidates,
        "bytes": sum(int(c["bytes"] or 0) for c in candidates),
        "kept_young": kept_young,
        "live_jobs": live,
    }


def _references(state: State) -> tuple[set[str], set[str]]:
    """The digests every checkpoint references, and every artifact store root in use."""
    store = state.checkpoints()
    referenced: set[str] = set()
    roots: set[str] = set()
    for stage in store.stages():
        for rec in store.load(stage).records.values():
            for _, ref in record_artifacts(rec):
                if ref:
                    referenced.add(ref["digest"])
                    roots.add(ArtifactStore.root_of(ref["uri"]))
    for job in state.list_jobs():
        if job.get("output_url"):
            roots.add(output_store_url(job["output_url"]))
    return referenced, roots


def _written(f: StoredFile) -> float:
    return f.modified.timestamp() if f.modified else 0.0  # unknown age: treated as old
