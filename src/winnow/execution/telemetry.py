"""Winnow's metrics in Ray's Prometheus export, and GPU sampling with NVML.

Metrics are ``ray.util.metrics`` objects, created lazily once per worker
process. Ray prefixes them with ``ray_`` on each node's metrics export port
(counters also get ``_total``): ``ray_winnow_batches_total{stage,status}``,
``ray_winnow_rows_in_total``, ``ray_winnow_stage_latency_seconds_bucket`` ...

GPU utilization and memory are sampled (through ``execution/nvml.py``, the one
home of NVML calls) in every stage actor that holds GPUs. Without NVML (no driver, no GPU) that is said once per
process, as a note, never as an error.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

from ray.util import metrics as ray_metrics

from winnow.execution.nvml import Nvml, NvmlUnavailable
from winnow.records import BatchStatus, StageResult

LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
_metrics: dict[str, Any] = {}
_lock = threading.Lock()
_nvml_note_given = False


def _get() -> dict[str, Any]:
    with _lock:
        if not _metrics:
            stage = ("stage",)
            _metrics.update(
                batches=ray_metrics.Counter(
                    "winnow_batches",
                    description="Batches processed, by stage and status.",
                    tag_keys=("stage", "status"),
                ),
                rows_in=ray_metrics.Counter(
                    "winnow_rows_in", description="Rows into a stage.", tag_keys=stage
                ),
                rows_out=ray_metrics.Counter(
                    "winnow_rows_out", description="Rows out of a stage.", tag_keys=stage
                ),
                bytes_in=ray_metrics.Counter(
                    "winnow_bytes_in",
                    description="Arrow bytes into a stage.",
                    tag_keys=stage,
                ),
                bytes_out=ray_metrics.Counter(
                    "winnow_bytes_out",
                    description="Artifact bytes written by a stage.",
                    tag_keys=stage,
                ),
                latency=ray_metrics.Histogram(
                    "winnow_stage_latency_seconds",
                    description="Per-batch time in a stage (process + verified commit).",
                    boundaries=LATENCY_BOUNDARIES,
                    tag_keys=stage,
                ),
                integrity=ray_metrics.Counter(
                    "winnow_integrity_failures",
                    description="Artifacts whose read-back did not verify.",
                    tag_keys=stage,
                ),
                retries=ray_metrics.Counter(
                    "winnow_retries", description="Batch retries scheduled.", tag_keys=stage
                ),
                quarantined=ray_metrics.Counter(
                    "winnow_quarantined_records",
                    description="Bad source records set aside.",
                    tag_keys=stage,
                ),
                gpu_util=ray_metrics.Gauge(
                    "winnow_gpu_utilization_percent",
                    description="GPU utilization sampled with NVML.",
                    tag_keys=("node", "gpu", "stage"),
                ),
                gpu_mem=ray_metrics.Gauge(
                    "winnow_gpu_memory_used_bytes",
                    description="GPU memory in use, sampled with NVML.",
                    tag_keys=("node", "gpu", "stage"),
                ),
            )
        return _metrics


def record_batch(stage: str, result: StageResult, bytes_in: int) -> None:
    """Count one stage result (what StageWorker.run returns)."""
    m = _get()
    tags = {"stage": stage}
    status = str(result.status)
    m["batches"].inc(1, tags={"stage": stage, "status": status})
    m["latency"].observe(float(result.duration_s or 0.0), tags=tags)
    if result.status == BatchStatus.INTEGRITY:
        m["integrity"].inc(1, tags=tags)
    if result.status != BatchStatus.SUCCEEDED:
        return
    for key, value in (
        ("rows_in", result.rows_in or 0),
        ("rows_out", result.rows_out or 0),
        ("bytes_in", bytes_in),
        ("bytes_out", (result.artifact or {}).get("bytes", 0)),
    ):
        if value:
            m[key].inc(value, tags=tags)
    bad = result.source_meta.bad if result.source_meta else 0
    if bad:
        m["quarantined"].inc(bad, tags=tags)


def record_retry(stage: str) -> None:
    """Count one retry of a batch at ``stage`` in Ray's metrics."""
    _get()["retries"].inc(1, tags={"stage": stage})


class GpuSampler:
    """Samples the GPUs an actor holds into gauges, every ``period_s`` seconds."""

    def __init__(self, stage: str, gpu_ids: list[Any], period_s: float = 5.0) -> None:
        self.stage = stage
        self.gpu_ids = [int(g) for g in gpu_ids]
        self.period_s = period_s
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start the sampling thread; False (with a one-time note) when NVML is not available."""
        global _nvml_note_given
        try:
            session = Nvml.open()
        except NvmlUnavailable as exc:
            if not _nvml_note_given:
                _nvml_note_given = True
                print(
                    f"note: GPU telemetry off for stage {self.stage!r} on {socket.gethostname()}: "
                    f"{exc.reason}; the stage runs as usual",
                    file=sys.stderr,
                )
            return False
        self.thread = threading.Thread(target=self._loop, args=(session,), daemon=True)
        self.thread.start()
        return True

    def sample(self, session: Nvml) -> list[dict[str, Any]]:
        """Sample each GPU's utilisation and memory into the gauges; return the readings."""
        out = []
        m = _get()
        node = socket.gethostname()
        for gpu in self.gpu_ids:
            now = session.sample(gpu)
            util, used = now.utilization_percent, now.memory_used_bytes
            tags = {"node": node, "gpu": str(gpu), "stage": self.stage}
            m["gpu_util"].set(float(util), tags=tags)
            m["gpu_mem"].set(float(used), tags=tags)
            out.append({"gpu": gpu, "utilization_percent": util, "memory_used_bytes": used})
        return out

    def _loop(self, session: Nvml) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.sample(session)
                except Exception as exc:  # a GPU fell off the bus: stop sampling, keep working
                    print(f"note: GPU sampling stopped: {exc}", file=sys.stderr)
                    return
                self.stop.wait(self.period_s)
        finally:
            session.close()

    def close(self) -> None:
        """Ask the sampling thread to stop (it closes NVML on its way out)."""
        self.stop.set()
