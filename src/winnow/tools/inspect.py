"""``winnow inspect``: one job's run log, one batch's history, one artifact's lineage."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from winnow.errors import UsageError
from winnow.storage.state import State
from winnow.tools.status import ray_view
from winnow.tools.verify import verify_state as verify_state


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
    """The run log as Markdown (the cookbook's template); stages in pipeline order."""
    job = info["job"]
    lines = _summary_lines(job, info.get("ray"))
    lines += _state_lines(job)
    lines += _stage_lines(job, info["timings"])
    lines += _error_lines(job)
    return "\n".join(lines) + "\n"


def stage_order(job: dict[str, Any]) -> list[str]:
    """The job's stages in pipeline order (then any other stage its counts name)."""
    names = [s["name"] for s in job.get("stages") or [] if "name" in s]
    for table in ("counts", "state_before", "state_after", "delta"):
        names += [n for n in job.get(table) or {} if n not in names]
    return names


def _summary_lines(job: dict[str, Any], ray: dict[str, Any] | None) -> list[str]:
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
    if ray:
        lines.append(
            f"- Ray job: `{ray.get('submission_id')}` at {ray.get('dashboard_url')}"
            + (f", Ray status **{ray['status']}**" if ray.get("status") else "")
        )
    return lines


def _state_lines(job: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## State before / after / delta",
        "",
        "| stage | before | after | delta |",
        "| --- | --- | --- | --- |",
    ]
    before, after, delta = (job.get(k) or {} for k in ("state_before", "state_after", "delta"))
    for stage in stage_order(job):
        if stage in before or stage in after or stage in delta:
            lines.append(
                f"| {stage} | {counts_text(before.get(stage))} | {counts_text(after.get(stage))} | "
                f"{counts_text(delta.get(stage), signed=True)} |"
            )
    return lines


def _stage_lines(job: dict[str, Any], timings: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Per stage",
        "",
        "| stage | run | skipped | retried | failed | rows in | rows out | p50 s | p95 s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    counts = job.get("counts") or {}
    for stage in stage_order(job):
        if stage not in counts:
            continue
        c, t = counts[stage], timings.get(stage, {})
        lines.append(
            f"| {stage} | {c['run']} | {c['skipped']} | {c['retried']} | {c['failed']} | "
            f"{c['rows_in']} | {c['rows_out']} | {t.get('p50_s', '')} | {t.get('p95_s', '')} |"
        )
    return lines


def _error_lines(job: dict[str, Any]) -> list[str]:
    lines = ["", "## Errors by type", ""]
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
    return lines


def counts_text(counts: dict[str, int] | None, signed: bool = False) -> str:
    """Status counts as ``SUCCEEDED 4, FAILED 1`` (``+4`` with ``signed``), ``-`` if none."""
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
