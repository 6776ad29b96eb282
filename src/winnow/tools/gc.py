"""``winnow gc``: artifacts no checkpoint references, and stale temporaries."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from winnow.records import JobStatus
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.fs import join, refresh
from winnow.storage.liveness import Liveness, liveness
from winnow.storage.state import State
from winnow.tools.verify import store_for as store_for
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
    one a run is about to commit.
    """
    storage_options = state.storage_options if storage_options is None else storage_options
    store = state.checkpoints()
    referenced: set[str] = set()
    roots: set[str] = set()
    for stage in store.stages():
        for rec in store.load(stage).records.values():
            for ref in (rec.get("artifact"), (rec.get("quarantine") or {}).get("artifact")):
                if ref:
                    referenced.add(ref["digest"])
                    roots.add(ref["uri"].rsplit("/", 3)[0])
    for job in state.list_jobs():
        if job.get("output_url"):
            roots.add(join(job["output_url"].rstrip("/"), "artifacts"))
    live = [
        j["job_id"]
        for j in state.list_jobs()
        if j.get("status") == JobStatus.RUNNING
        and liveness(j.get("pid"), j.get("host")) is not Liveness.GONE
    ]
    now = time.time()
    candidates: list[dict[str, Any]] = []
    kept_young = 0
    for root in sorted(roots):
        art = ArtifactStore(root, storage_options)
        mine: list[dict[str, Any]] = []
        for path, info in _listing(art.fs, join(art.root, "sha256")).items():
            digest = path.rsplit("/", 1)[-1].partition(".")[0]
            if digest in referenced:
                continue
            if now - _mtime(info) < grace_s:
                kept_young += 1
                continue
            mine.append({"kind": "unreferenced", "path": path, "bytes": info.get("size", 0)})
        for path, info in _listing(art.fs, join(art.root, "tmp")).items():
            if now - _mtime(info) < grace_s:
                kept_young += 1
                continue
            mine.append({"kind": "temporary", "path": path, "bytes": info.get("size", 0)})
        if apply:
            for c in mine:
                art.fs.rm_file(c["path"])
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


def _listing(fs: Any, base: str) -> dict[str, dict[str, Any]]:
    try:
        refresh(fs, base)
        return dict(fs.find(base, detail=True))
    except FileNotFoundError:
        return {}


def _mtime(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0  # unknown age: treated as old
