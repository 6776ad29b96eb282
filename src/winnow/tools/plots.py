"""The pictures of a run (matplotlib), shared by the notebook and ``winnow report``.

Each takes one job's record or batch records (``explore.batch_records(state,
job_id)``) and lists stages in pipeline order. Only committed batches are
drawn as latency and throughput: a failed attempt did no work that counts.
With nothing to draw, a picture says so in words instead of failing.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from winnow.errors import UsageError
from winnow.records import BatchStatus
from winnow.tools.inspect import stage_order

KEPT, DROPPED, QUARANTINED = "#3b7dd8", "#e07b39", "#8e44ad"


def _pyplot() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline"}:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rows_per_stage(job: dict[str, Any]) -> Any:
    """Rows kept, dropped (filtered) and quarantined (bad records) per stage, stacked bars.

    A bar's height is the rows that reached the stage: its input plus the bad
    records it set aside (the first stage's bad records are the reader's).
    """
    plt = _pyplot()
    counts = job.get("counts") or {}
    names = [n for n in stage_order(job) if n in counts]
    kept = [counts[n]["rows_out"] for n in names]
    dropped = [max(0, counts[n]["rows_in"] - counts[n]["rows_out"]) for n in names]
    bad = [counts[n].get("bad_records") or 0 for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if not any(kept + dropped + bad):
        _nothing(ax, "no rows reached any stage in this job")
    else:
        ax.bar(names, kept, label="kept", color=KEPT)
        ax.bar(names, dropped, bottom=kept, label="dropped", color=DROPPED)
        tops = [k + d for k, d in zip(kept, dropped, strict=True)]
        ax.bar(names, bad, bottom=tops, label=f"quarantined ({sum(bad):,})", color=QUARANTINED)
        ax.yaxis.set_major_formatter(_thousands())
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    lost = ((job.get("accounting") or {}).get("total") or {}).get("in_failed_batches")
    if lost:
        ax.set_xlabel(f"not shown: {lost:,} input rows in failed batches", color="#c62828")
    ax.set_ylabel("rows")
    ax.set_title(f"rows per stage, {job['job_id']}", fontsize=10)
    fig.tight_layout()
    return fig


def stage_latency(records: pa.Table, order: list[str] | None = None) -> Any:
    """Distribution of per-batch stage latency (seconds) of committed batches, one box per stage.

    Args:
        records: batch records (``batch_records``); failed attempts are left out.
        order: the stages in pipeline order (``inspect.stage_order(job)``);
            default: the order they first appear in.
    """
    plt = _pyplot()
    rows = _committed(records)
    by_stage: dict[str, list[float]] = {}
    for r in rows:
        if r["duration_s"] is not None:
            by_stage.setdefault(r["stage"], []).append(r["duration_s"])
    stages = _ordered(by_stage, order)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if stages:
        ax.boxplot([by_stage[s] for s in stages], tick_labels=stages)
    else:
        _nothing(ax, "no batch was computed: nothing to time")
    ax.set_ylabel("seconds per batch")
    ax.set_title("stage latency")
    fig.tight_layout()
    return fig


def throughput(records: pa.Table, order: list[str] | None = None, bins: int = 30) -> Any:
    """Rows finished per second over one job's run, per stage (committed batches only).

    Args:
        records: one job's batch records (``batch_records(state, job_id)``);
            several jobs' would draw the idle time between them.
        order: the stages in pipeline order; default: as they first appear.
        bins: time buckets across the run.

    Raises:
        UsageError: the records come from more than one job.
    """
    plt = _pyplot()
    rows = [r for r in _committed(records) if r["started_at"]]
    jobs = {r.get("job_id") for r in rows}
    if len(jobs) > 1:
        raise UsageError(
            f"throughput draws one job's batches; these come from {len(jobs)} jobs: "
            "pass batch_records(state, job_id)"
        )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if rows:
        t0 = min(r["started_at"] for r in rows)
        t1 = max(r["started_at"] + (r["duration_s"] or 0) for r in rows)
        width = max((t1 - t0) / bins, 1e-3)
        by_stage: dict[str, list[float]] = {}
        for r in rows:
            series = by_stage.setdefault(r["stage"], [0.0] * bins)
            end = r["started_at"] + (r["duration_s"] or 0)
            series[min(bins - 1, int((end - t0) / width))] += (r["rows_in"] or 0) / width
        for stage in _ordered(by_stage, order):
            ax.plot([(i + 0.5) * width for i in range(bins)], by_stage[stage], label=stage)
        ax.yaxis.set_major_formatter(_thousands())
        ax.legend(fontsize=8)
    else:
        _nothing(ax, "no batch was computed: no throughput to draw")
    ax.set_xlabel("seconds since the job's first batch started")
    ax.set_ylabel("rows/s")
    ax.set_title("throughput over time")
    fig.tight_layout()
    return fig


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes (90 dpi); the figure is closed."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return buf.getvalue()


def _committed(records: pa.Table) -> list[dict[str, Any]]:
    return [r for r in records.to_pylist() if r["status"] == BatchStatus.SUCCEEDED]


def _ordered(present: dict[str, Any], order: list[str] | None) -> list[str]:
    first = [s for s in order or [] if s in present]
    return first + [s for s in present if s not in first]


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def _nothing(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])
