"""The tables of ``winnow report``'s page: per stage, per grouping stage, checkpoints, rows."""

from __future__ import annotations

import statistics
from typing import Any

import pyarrow as pa

from winnow.records import BatchStatus, JobStatus
from winnow.tools import plots
from winnow.tools import report_page as page
from winnow.tools.inspect import stage_order

SKEWED = 2.0  # a grouping stage's largest partition over the mean, marked from here


def unfinished(job: dict[str, Any]) -> str:
    """Why a job record has no counts yet (or never will)."""
    if job.get("status") in (JobStatus.FAILED, JobStatus.CANCELLED):
        return f"The job ended ({job.get('status')}) before it counted its batches."
    return f"The job is {job.get('status')}: its counts come when it ends."


def stage_table(job: dict[str, Any], own: pa.Table) -> str:
    """The job's counts per stage, and the latency of the batches it committed."""
    if "counts" not in job:
        return f"<p class='muted'>{page.esc(unfinished(job))}</p>"
    counts = job["counts"]
    durations: dict[str, list[float]] = {}
    for r in own.to_pylist():
        if r["status"] == BatchStatus.SUCCEEDED and r["duration_s"] is not None:
            durations.setdefault(r["stage"], []).append(r["duration_s"])
    rows: list[list[Any]] = []
    bad: set[tuple[int, int]] = set()
    for stage in stage_order(job):
        if stage not in counts:
            continue
        c, times = counts[stage], sorted(durations.get(stage, []))
        if c["failed"]:
            bad.add((len(rows), 4))
        rows.append(
            [
                stage,
                c["run"],
                c["skipped"],
                c["retried"],
                c["failed"],
                c["rows_in"],
                c["rows_out"],
                c.get("bad_records", 0),
                round(statistics.median(times), 4) if times else "",
                round(times[int(0.95 * (len(times) - 1))], 4) if times else "",
            ]
        )
    header = ["stage", "run", "skipped", "retried", "failed", "rows in", "rows out"]
    header += ["quarantined", "p50 s", "p95 s"]
    note = "<p class='muted'>p50 and p95: seconds per batch this run committed.</p>"
    return page.table(header, rows, bad) + note


def groupings_table(job: dict[str, Any]) -> str:
    """Each grouping stage's partitions: how many, their rows and bytes, the skew."""
    rows: list[list[Any]] = []
    bad: set[tuple[int, int]] = set()
    for g in job["groupings"]:
        r, b = g.get("partition_rows") or {}, g.get("partition_bytes") or {}
        if (g.get("skew") or 0) >= SKEWED:
            bad.add((len(rows), 7))
        rows.append(
            [
                g["stage"],
                "" if g["map_batches"] is None else g["map_batches"],
                g["partitions"],
                "not planned" if g["pending"] else g["reduce_partitions"],
                r.get("min", ""),
                r.get("max", ""),
                b.get("max", ""),
                g.get("skew", ""),
            ]
        )
    header = ["stage", "map batches", "partitions", "non-empty", "rows min", "rows max"]
    header += ["bytes max", "skew"]
    note = (
        "<p class='muted'>skew: the largest partition's rows over the mean; a partition is "
        f"reduced in one worker's memory (marked from {SKEWED:g}x: raise partitions or "
        "spread the key).</p>"
    )
    return page.table(header, rows, bad) + note


def delta_table(job: dict[str, Any]) -> str:
    """Committed and failed batches per stage, before and after the run, in words."""
    before, after, delta = (job.get(k) or {} for k in ("state_before", "state_after", "delta"))
    unknown = "not recorded" if "state_after" not in job else None
    rows: list[list[Any]] = []
    bad: set[tuple[int, int]] = set()
    for stage in stage_order(job):
        if not (stage in before or stage in after or stage in delta):
            continue
        if (delta.get(stage) or {}).get(BatchStatus.FAILED, 0) > 0:
            bad.add((len(rows), 3))
        rows.append(
            [
                stage,
                _counts(before.get(stage)),
                unknown or _counts(after.get(stage)),
                unknown or _counts(delta.get(stage), signed=True) or "no change",
            ]
        )
    caption = "<p class='muted'>Batch checkpoints of each stage in the state, by status.</p>"
    return caption + page.table(["stage", "before", "after", "change"], rows, bad)


def _counts(counts: dict[str, int] | None, signed: bool = False) -> str:
    """``{"SUCCEEDED": 48, "FAILED": 3}`` as "48 succeeded, 3 failed"."""
    if not counts:
        return "" if signed else "none"
    first = [s for s in (BatchStatus.SUCCEEDED, BatchStatus.FAILED) if s in counts]
    keys = first + sorted(k for k in counts if k not in first)
    return ", ".join(f"{counts[k]:{'+,d' if signed else ',d'}} {k.lower()}" for k in keys)


def rows_table(job: dict[str, Any]) -> str:
    """Rows kept, dropped and quarantined per stage, as a chart."""
    if "counts" not in job:
        return f"<p class='muted'>{page.esc(unfinished(job))}</p>"
    if not job.get("batches"):
        return "<p class='muted'>This run had no input rows.</p>"
    return page.image(plots.rows_per_stage(job))
