"""The tools around a run: status, inspect, gc (verify lives in ``verify.py``).

Everything here reads the state through ``storage/`` and so works the same on
a local disk and on object storage. The CLI prints what these return.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections import Counter
from datetime import datetime
from typing import Any

from winnow.errors import UsageError
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.checkpoints import FAILED, SUCCEEDED, Damage
from winnow.storage.fs import join
from winnow.storage.state import REPAIR_FIX, State
from winnow.verify import store_for as store_for
from winnow.verify import verify_state as verify_state

GC_GRACE_S = 3600.0
DAMAGE_FIX = (
    "each damaged line was skipped and its batch is recomputed by the next run; " + REPAIR_FIX
)
SUMMARY_KEYS = (
    "job_id",
    "pipeline",
    "status",
    "created_at",
    "finished_at",
    "wall_s",
    "rows_in",
    "rows_out",
    "bad_records",
    "throughput_rows_s",
    "skipped_fraction",
    "manifest",
    "output_url",
    "state_url",
    "ray_job_id",
)


def job_summary(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record.get(k) for k in SUMMARY_KEYS if k in record}
    if record.get("counts"):
        out["counts"] = record["counts"]
    if record.get("poison_batches"):
        out["poison_batches"] = record["poison_batches"]
    if record.get("ray"):
        out["ray"] = ray_view(record)
    elif record.get("status") == "RUNNING" and not _alive(record):
        out["note"] = "its process is gone (killed?); rerun the same command to finish"
    ray = out.get("ray") or {}
    if ray.get("note"):
        out["note"] = ray["note"]
    return out


def ray_view(record: dict[str, Any]) -> dict[str, Any]:
    """A submitted job's Ray side; Ray is asked only while our record is unfinished."""
    info = record["ray"]
    view = {"submission_id": info.get("submission_id"), "dashboard_url": info.get("dashboard_url")}
    if record.get("status") in ("SUBMITTED", "RUNNING"):
        from winnow.execution.submit import ray_status

        live = ray_status(record) or {}
        view.update(live)
        if live.get("status") in ("FAILED", "STOPPED", "SUCCEEDED"):
            view["note"] = (
                f"Ray says the job is {live['status']} but its record was never finished "
                f"(driver lost): {live.get('message', '')}".strip()
            )
    return view


def _alive(record: dict[str, Any]) -> bool:
    """Whether a RUNNING job's driver may still be alive (unknown on another host)."""
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- status -----------------------------------------------------------------
def status(state: State, recent: int = 10) -> dict[str, Any]:
    """Jobs, queue depth, per-stage counts, failures and quarantined records.

    ``damage`` lists the state lines and files that could not be read
    ("file:line: reason"); they are skipped, and ``damage_fix`` says how to mend them.
    """
    listing = state.job_listing()
    jobs = listing.jobs
    damage: list[Damage] = list(listing.damaged)
    queue = Counter(str(j.get("status", "UNKNOWN")).lower() for j in jobs)
    store = state.checkpoints()
    stages: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    for stage in store.stages():
        loaded = store.load(stage)
        damage.extend(loaded.damage)
        records = loaded.records.values()
        counts = Counter(r["status"] for r in records)
        ok = [r for r in records if r["status"] == SUCCEEDED]
        stages[stage] = {
            "succeeded": counts[SUCCEEDED],
            "failed": counts[FAILED],
            "rows_in": sum(int(r.get("rows_in") or 0) for r in ok),
            "rows_out": sum(int(r.get("rows_out") or 0) for r in ok),
            "quarantined_records": sum(int(r.get("bad_records") or 0) for r in ok),
        }
        for r in records:
            if r["status"] == FAILED:
                err = r.get("error") or {}
                failures.append(
                    {
                        "stage": stage,
                        "key": r["key"],
                        "attempt": r.get("attempt"),
                        "error_type": err.get("type"),
                        "message": str(err.get("message", ""))[:300],
                        "source": r.get("source"),
                        "job_id": r.get("job_id"),
                    }
                )
    latest = next((j for j in jobs if j.get("throughput_rows_s") is not None), None)
    return {
        "state_url": state.display(),
        "queue": {
            "pending": queue["pending"],
            "running": queue["running"],
            "succeeded": queue["succeeded"],
            "failed": queue["failed"],
            "cancelled": queue["cancelled"],
            "submitted": queue["submitted"],
        },
        "jobs": [job_summary(j) for j in jobs[:recent]],
        "stages": stages,
        "failed_batches": len(failures),
        "failures": failures[:50],
        "quarantined_records": sum(s["quarantined_records"] for s in stages.values()),
        "throughput_rows_s": latest.get("throughput_rows_s") if latest else None,
        "damage": [str(d) for d in damage],
        "damage_fix": DAMAGE_FIX if damage else None,
    }


# -- inspect ----------------------------------------------------------------
def inspect_job(state: State, job_id: str) -> dict[str, Any]:
    """A job's run log: the record plus per-stage timings and its events by type."""
    record = state.read_job(job_id)
    store = state.checkpoints()
    timings: dict[str, dict[str, Any]] = {}
    for stage in store.stages():
        durations = sorted(
            float(r["duration_s"])
            for r in store.load(stage).records.values()
            if r.get("job_id") == job_id and r.get("duration_s") is not None
        )
        if durations:
            timings[stage] = {
                "batches": len(durations),
                "p50_s": round(statistics.median(durations), 4),
                "p95_s": round(durations[int(0.95 * (len(durations) - 1))], 4),
                "max_s": round(durations[-1], 4),
            }
    journal = state.read_events(job_id)
    return {
        "job": record,
        "ray": ray_view(record) if record.get("ray") else None,
        "timings": timings,
        "events": dict(Counter(e.get("type", "?") for e in journal.events)),
        "journal_torn": journal.torn,
    }


def job_markdown(info: dict[str, Any]) -> str:
    """The run log as Markdown (the cookbook's template)."""
    job = info["job"]
    lines = [
        f"# Run log: {job['job_id']}",
        "",
        f"- pipeline: `{job.get('pipeline')}`  profile: `{(job.get('profile') or {}).get('name')}`",
        f"- status: **{job.get('status')}**",
        f"- started: {job.get('created_at')}  finished: {job.get('finished_at')}  "
        f"wall: {job.get('wall_s')} s",
        f"- rows in: {job.get('rows_in')}  rows out: {job.get('rows_out')}  "
        f"bad records: {job.get('bad_records')}",
        f"- output manifest: {job.get('manifest')}",
    ]
    ray = info.get("ray")
    if ray:
        lines.append(
            f"- Ray job: `{ray.get('submission_id')}` at {ray.get('dashboard_url')}"
            + (f", Ray status **{ray['status']}**" if ray.get("status") else "")
        )
    lines += [
        "",
        "## State before / after / delta",
        "",
        "| stage | before | after | delta |",
        "| --- | --- | --- | --- |",
    ]
    before, after, delta = (job.get(k) or {} for k in ("state_before", "state_after", "delta"))
    for stage in sorted(set(before) | set(after) | set(delta)):
        lines.append(
            f"| {stage} | {_fmt(before.get(stage))} | {_fmt(after.get(stage))} | "
            f"{_fmt(delta.get(stage), signed=True)} |"
        )
    lines += [
        "",
        "## Per stage",
        "",
        "| stage | run | skipped | retried | failed | rows in | rows out | p50 s | p95 s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage, c in (job.get("counts") or {}).items():
        t = info["timings"].get(stage, {})
        lines.append(
            f"| {stage} | {c['run']} | {c['skipped']} | {c['retried']} | {c['failed']} | "
            f"{c['rows_in']} | {c['rows_out']} | {t.get('p50_s', '')} | {t.get('p95_s', '')} |"
        )
    lines += ["", "## Errors by type", ""]
    errors = job.get("errors") or {}
    if not errors:
        lines.append("none")
    for kind, group in errors.items():
        example = group.get("example") or {}
        lines += [
            f"### {kind} ({group['count']}x, stages: {', '.join(group.get('stages', []))})",
            "",
            f"{example.get('message', '')}",
            "",
            "```",
            str(example.get("traceback") or "(no traceback)").strip(),
            "```",
            "",
        ]
    if job.get("poison_batches"):
        lines += ["## Poison batches", ""]
        for p in job["poison_batches"]:
            src = p.get("source") or {}
            lines.append(
                f"- {p['stage']} `{p['key'][:16]}` {p['error_type']} after {p['attempts']} "
                f"attempts: {src.get('file')} rows {src.get('start')}-{src.get('stop')}"
            )
    return "\n".join(lines) + "\n"


def _fmt(counts: dict[str, int] | None, signed: bool = False) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{k} {v:+d}" if signed else f"{k} {v}" for k, v in sorted(counts.items()))


def inspect_batch(state: State, key: str) -> dict[str, Any]:
    """One batch across stages and attempts; KEY is a stage key or a source batch key."""
    prefix = _prefix(key, "batch key")
    store = state.checkpoints()
    stages = []
    keys: set[str] = set()
    for stage in store.stages():
        for rec in store.load(stage).records.values():
            if rec["key"].startswith(prefix) or str(rec.get("batch", "")).startswith(prefix):
                stages.append(rec)
                keys.add(rec["key"])
    if not stages:
        raise UsageError(f"no checkpoint has batch key {key!r}; `winnow status` lists failures")
    batches = {r.get("batch") for r in stages}
    if len(batches) > 1:
        raise UsageError(f"{key!r} matches {len(batches)} batches; give more of the key")
    history = [e for e in state.read_events().events if e.get("key") in keys]
    return {"batch": batches.pop(), "stages": stages, "history": history}


def inspect_artifact(state: State, digest: str) -> dict[str, Any]:
    """An artifact's lineage: source rows, stage chain, checkpoint and job."""
    prefix = _prefix(digest, "digest")
    store = state.checkpoints()
    by_stage = {stage: store.load(stage).records for stage in store.stages()}
    found = [
        (stage, rec)
        for stage, records in by_stage.items()
        for rec in records.values()
        if str((rec.get("artifact") or {}).get("digest", "")).startswith(prefix)
    ]
    if not found:
        raise UsageError(f"no checkpoint references an artifact {digest!r}")
    digests = {rec["artifact"]["digest"] for _, rec in found}
    if len(digests) > 1:
        raise UsageError(f"{digest!r} matches {len(digests)} artifacts; give more of the digest")
    by_key = {
        rec["key"]: (stage, rec) for stage, records in by_stage.items() for rec in records.values()
    }
    uses = []
    for stage, rec in found:
        chain = []
        cur: tuple[str, dict[str, Any]] | None = (stage, rec)
        while cur is not None:
            s, r = cur
            chain.append(
                {"stage": s, "key": r["key"], "digest": (r.get("artifact") or {}).get("digest")}
            )
            cur = by_key.get(str(r.get("input_key")))
        uses.append(
            {
                "stage": stage,
                "key": rec["key"],
                "status": rec["status"],
                "job_id": rec.get("job_id"),
                "attempt": rec.get("attempt"),
                "source": rec.get("source"),
                "chain": list(reversed(chain)),
            }
        )
    return {"artifact": found[0][1]["artifact"], "checkpoints": uses}


def _prefix(value: str, what: str) -> str:
    value = value.strip().lower()
    if len(value) < 8 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"{value!r} is not a {what}: give at least 8 hex characters of it")
    return value


# -- gc ---------------------------------------------------------------------
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
    live = [j["job_id"] for j in state.list_jobs() if j.get("status") == "RUNNING" and _alive(j)]
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
        invalidate = getattr(fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(base)
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
