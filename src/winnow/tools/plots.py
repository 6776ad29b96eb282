"""The pictures of a run (matplotlib), shared by the notebook and ``winnow report``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def _pyplot() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline"}:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rows_per_stage(job: dict[str, Any]) -> Any:
    """Rows in, kept and dropped per stage (bars)."""
    plt = _pyplot()
    counts = job.get("counts") or {}
    names = list(counts)
    rows_in = [counts[n]["rows_in"] for n in names]
    kept = [counts[n]["rows_out"] for n in names]
    dropped = [max(0, i - k) for i, k in zip(rows_in, kept, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, kept, label="kept", color="#3b7dd8")
    ax.bar(names, dropped, bottom=kept, label="dropped", color="#e07b39")
    ax.set_ylabel("rows")
    ax.set_title(f"rows kept / dropped per stage — {job['job_id']}")
    ax.legend()
    fig.tight_layout()
    return fig


def stage_latency(records: pa.Table) -> Any:
    """Distribution of per-batch stage latency (seconds), one box per stage."""
    plt = _pyplot()
    stages = list(dict.fromkeys(records.column("stage").to_pylist()))
    data = []
    for stage in stages:
        mask = [s == stage for s in records.column("stage").to_pylist()]
        values = [
            v for v, m in zip(records.column("duration_s").to_pylist(), mask, strict=True) if m
        ]
        data.append([v for v in values if v is not None] or [0.0])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.boxplot(data, tick_labels=stages)
    ax.set_ylabel("seconds per batch")
    ax.set_title("stage latency")
    fig.tight_layout()
    return fig


def throughput(records: pa.Table, bins: int = 30) -> Any:
    """Rows finished per second over the run, per stage."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    rows = records.to_pylist()
    ends = [r["started_at"] + (r["duration_s"] or 0) for r in rows if r["started_at"]]
    if ends:
        t0, t1 = min(r["started_at"] for r in rows if r["started_at"]), max(ends)
        width = max((t1 - t0) / bins, 1e-3)
        for stage in dict.fromkeys(r["stage"] for r in rows):
            series = [0.0] * bins
            for r in rows:
                if r["stage"] == stage and r["started_at"]:
                    end = r["started_at"] + (r["duration_s"] or 0)
                    series[min(bins - 1, int((end - t0) / width))] += (r["rows_in"] or 0) / width
            ax.plot([(i + 0.5) * width for i in range(bins)], series, label=stage)
        ax.legend()
    ax.set_xlabel("seconds since the first batch started")
    ax.set_ylabel("rows/s")
    ax.set_title("throughput over time")
    fig.tight_layout()
    return fig


def to_png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return buf.getvalue()
