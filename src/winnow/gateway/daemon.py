"""The gateway daemon: takes PENDING jobs from the state's queue and runs them.

One process, one scheduler loop on the main thread, jobs run in-process one at
a time on a Ray started once (or attached with ``--address``), so a queue of
small jobs does not pay Ray's start-up per job. Around it:

* a PID file (``<run_dir>/gateway.pid``, created exclusively) refuses a second
  instance and names the holder;
* ``/health`` and Prometheus ``/metrics`` on 127.0.0.1;
* a heartbeat and persisted runtime metrics in ``<state>/gateway/`` (what
  ``gateway status`` reads), and periodic snapshots;
* stuck-work detection: a RUNNING job whose process is gone, or whose lease
  expired, is requeued;
* SIGTERM/SIGINT: stop taking work, let in-flight batches commit, put the
  unfinished job back in the queue, release its lock, flush, exit 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from winnow import api
from winnow.gateway import cluster_jobs, queue, snapshots
from winnow.gateway.service import Metrics, PidFile, serve_http
from winnow.records import ErrorRecord, JobStatus
from winnow.request import RunRequest
from winnow.storage import journal
from winnow.storage.locks import LockHeld
from winnow.storage.state import State, now_iso

log = logging.getLogger("winnow.gateway")
DEFAULT_RUN_DIR = ".winnow/gateway"
DEFAULT_PORT = 8899
LEASE_S = 300.0
RECONCILE_EVERY_S = 10.0  # how often submitted jobs are checked with the Ray Jobs API


@dataclass
class Settings:
    """How the gateway runs: its state, run dir, port, Ray address and periods."""

    state: str | None = None
    run_dir: str = DEFAULT_RUN_DIR
    port: int = DEFAULT_PORT
    address: str | None = None
    poll_s: float = 1.0
    snapshot_every_s: float = 300.0
    lease_s: float = LEASE_S
    recover: bool = False


@dataclass
class Runtime:
    """What the daemon knows about itself; persisted for ``gateway status``."""

    started_at: str = field(default_factory=now_iso)
    active: dict[str, Any] = field(default_factory=dict)
    finished: Counter[str] = field(default_factory=Counter)
    stages: dict[str, Counter[str]] = field(default_factory=dict)
    last_snapshot: str | None = None


class Gateway:
    """The operations daemon.

    It claims queued jobs and runs them one at a time, hands cluster jobs to
    the Jobs API, requeues stuck ones, snapshots the state, and serves /health
    and /metrics.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state: State = api.open_state(settings.state)
        self.pidfile = PidFile(settings.run_dir)
        self.metrics = Metrics()
        self.runtime = Runtime()
        self.stop = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self._ray_started = False
        self._last_reconcile = 0.0

    # -- lifecycle ---------------------------------------------------------
    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""
        self.state.check_version()
        self.pidfile.acquire()
        try:
            self.state.prepare()
            if self.settings.recover:
                self._recover()
            self._install_signals()
            self._start_http()
            self.metrics.up.set(1)
            log.info("gateway started", extra={"fields": self._identity()})
            self._loop()
            return 0
        finally:
            self.metrics.up.set(0)
            self._write_runtime(scheduler="stopped")
            if self.server is not None:
                self.server.shutdown()
            if self._ray_started:
                from winnow.execution.cluster import shutdown

                shutdown()
            self.pidfile.release()
            log.info("gateway stopped", extra={"fields": {"pid": os.getpid()}})

    def _identity(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "state": self.state.display(),
            "port": self.settings.port,
            "run_dir": self.settings.run_dir,
        }

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            log.info(
                "stopping: no new jobs; in-flight batches commit first",
                extra={"fields": {"signal": signal.Signals(signum).name}},
            )
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _recover(self) -> None:
        summary = journal.recover(self.state)
        log.info("journal recovered", extra={"fields": summary})

    # -- the scheduler -----------------------------------------------------
    def _loop(self) -> None:
        last_snapshot = 0.0
        while not self.stop.is_set():
            jobs = self.state.list_jobs()
            self._requeue_stuck(jobs)
            self._reconcile(jobs)
            self._publish_depth(jobs)
            self._write_runtime(scheduler="running")
            if time.monotonic() - last_snapshot >= self.settings.snapshot_every_s:
                self._snapshot()
                last_snapshot = time.monotonic()
            job = queue.next_pending(self.state)
            if job is None:
                self.stop.wait(self.settings.poll_s)
                continue
            self._run(job)
        self._publish_depth(self.state.list_jobs())

    def _requeue_stuck(self, jobs: list[dict[str, Any]]) -> None:
        now = time.time()
        for job in jobs:
            if job.get("status") != JobStatus.RUNNING or job["job_id"] in self.runtime.active:
                continue
            if "request" not in job or "ray" in job:
                continue  # a foreground run, or a cluster's (reconciled with Ray instead)
            reason = queue.runner_gone(job, now, self.settings.lease_s)
            if reason:
                queue.requeue(self.state, job, reason)
                self.metrics.requeued.inc()
                log.warning(
                    "requeued a stuck job", extra={"fields": {"job": job["job_id"], "why": reason}}
                )

    def _hand_to_cluster(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        job["attempts"] = int(job.get("attempts") or 0) + 1
        try:
            record = cluster_jobs.submit_queued(self.settings.state, job)
        except Exception as exc:  # a bad job must not take the scheduler down
            log.error("job submit failed", extra={"fields": {"job": job_id, "error": repr(exc)}})
            job.update(
                status=JobStatus.FAILED,
                finished_at=now_iso(),
                error=ErrorRecord.of(exc, with_traceback=False, clip=False).to_dict(),
            )
            self.state.write_job(job)
            self.metrics.finished.labels(JobStatus.FAILED).inc()
            return
        self.metrics.submitted.inc()
        log.info(
            "job submitted to the cluster",
            extra={"fields": {"job": job_id, "ray": record["ray"]["submission_id"]}},
        )

    def _reconcile(self, jobs: list[dict[str, Any]]) -> None:
        if time.monotonic() - self._last_reconcile < RECONCILE_EVERY_S:
            return
        self._last_reconcile = time.monotonic()
        for job_id, ray_status in cluster_jobs.reconcile(self.state, jobs):
            self.metrics.finished.labels(JobStatus.FAILED).inc()
            log.warning(
                "a submitted job ended on the cluster without finishing its record",
                extra={"fields": {"job": job_id, "ray_status": ray_status}},
            )

    def _run(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        request = job["request"]
        if request.get("submit_to"):
            self._hand_to_cluster(job)
            return
        job["attempts"] = int(job.get("attempts") or 0) + 1
        job.update(status=JobStatus.RUNNING, claimed_at=now_iso(), host=socket.gethostname())
        job.update(pid=os.getpid(), heartbeat_at=now_iso())
        self.state.write_job(job)
        self.runtime.active[job_id] = {"pipeline": job.get("pipeline"), "since": now_iso()}
        self.metrics.active.set(len(self.runtime.active))
        self._write_runtime(scheduler="running")
        log.info("job started", extra={"fields": {"job": job_id, "attempt": job["attempts"]}})
        t0 = time.monotonic()
        try:
            run_request = RunRequest.from_dict(request).but(state=self.settings.state)
            session = api.resolve_session(run_request)
            self._ensure_ray(session.profile.ray_num_cpus)
            record = api.execute(
                session,
                address=self.settings.address,
                stop=self.stop,
                job_id=job_id,
                notify=lambda note: log.warning(note),
                reuse_actors=True,
            )
        except LockHeld as exc:
            queue.requeue(self.state, self.state.read_job(job_id), f"pipeline locked: {exc}")
            self.stop.wait(self.settings.poll_s * 5)
            return
        except Exception as exc:  # a bad job must not take the scheduler down
            log.error("job failed to run", extra={"fields": {"job": job_id, "error": repr(exc)}})
            record = self.state.read_job(job_id)
            if record.get("status") in (JobStatus.PENDING, JobStatus.RUNNING):
                record.update(
                    status=JobStatus.FAILED,
                    finished_at=now_iso(),
                    error=ErrorRecord.of(exc, with_traceback=False, clip=False).to_dict(),
                )
                self.state.write_job(record)
        finally:
            self.runtime.active.pop(job_id, None)
            self.metrics.active.set(len(self.runtime.active))
        if record.get("status") == JobStatus.CANCELLED and self.stop.is_set():
            # Stopped by the operator, not by the user: the job goes back to the queue.
            queue.requeue(self.state, record, "gateway stopped while it ran")
            record["status"] = JobStatus.PENDING
        status = str(record.get("status"))
        self.runtime.finished[status] += 1
        self.metrics.finished.labels(status).inc()
        self.metrics.job_seconds.observe(time.monotonic() - t0)
        for stage, c in (record.get("counts") or {}).items():
            seen = self.runtime.stages.setdefault(stage, Counter())
            for outcome in ("run", "skipped", "retried", "failed"):
                seen[outcome] += int(c.get(outcome, 0))
                self.metrics.batches.labels(stage, outcome).inc(int(c.get(outcome, 0)))
        log.info("job finished", extra={"fields": {"job": job_id, "status": status}})

    def _ensure_ray(self, num_cpus: int | None) -> None:
        from winnow.execution.cluster import connect

        if connect(self.settings.address, num_cpus):
            self._ray_started = True

    def _publish_depth(self, jobs: list[dict[str, Any]]) -> None:
        for name, n in queue.depth(jobs).items():
            self.metrics.queue.labels(name).set(n)

    def _snapshot(self) -> None:
        try:
            path = snapshots.write_snapshot(self.state, "state-latest.json")
        except Exception as exc:  # a snapshot is a convenience; never stop the scheduler
            log.warning("snapshot failed", extra={"fields": {"error": str(exc)}})
            return
        self.runtime.last_snapshot = now_iso()
        log.info("snapshot written", extra={"fields": {"path": str(path)}})

    def _start_http(self) -> None:
        def health() -> dict[str, Any]:
            return {
                "status": "ok" if not self.stop.is_set() else "stopping",
                "pid": os.getpid(),
                "active_jobs": len(self.runtime.active),
            }

        self.server = serve_http(self.settings.port, health, self.metrics.registry)
        self.settings.port = self.server.server_address[1]

    def _write_runtime(self, scheduler: str) -> None:
        body = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "scheduler": scheduler,
            "started_at": self.runtime.started_at,
            "updated_at": now_iso(),
            "port": self.settings.port,
            "active_jobs": len(self.runtime.active),
            "active": self.runtime.active,
            "jobs": dict(self.runtime.finished),
            "stages": {k: dict(v) for k, v in self.runtime.stages.items()},
            "last_snapshot": self.runtime.last_snapshot,
        }
        self.state.write_file(RUNTIME_FILE, json.dumps(body, indent=1).encode())


RUNTIME_FILE = "gateway/runtime.json"  # in the state: what `gateway status` reads


def read_runtime(state: State) -> dict[str, Any] | None:
    """What the running gateway last wrote about itself, or None if none ever ran here."""
    try:
        return dict(json.loads(state.read_file(RUNTIME_FILE)))
    except FileNotFoundError:
        return None
