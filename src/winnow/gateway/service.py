"""The gateway daemon as a process.

Its pid file, its metrics, its /health and /metrics endpoint on 127.0.0.1,
and its JSON log lines.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from winnow.errors import UsageError
from winnow.storage.liveness import Liveness, liveness


class PidFile:
    """``gateway.pid``: created exclusively; a dead holder's file is taken over."""

    def __init__(self, run_dir: str) -> None:
        self.path = Path(run_dir) / "gateway.pid"

    def holder(self) -> int | None:
        """The pid of the live gateway holding the file, or None (no file, or its holder is gone)."""
        try:
            pid = int(self.path.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if liveness(pid, socket.gethostname()) is Liveness.GONE:
            return None
        return pid

    def acquire(self) -> None:
        """Create the file for this process, taking over a dead holder's.

        Raises:
            UsageError: a live gateway holds it, or another one raced for it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = self.holder()
                if pid is not None and pid != os.getpid():
                    raise UsageError(
                        f"a gateway is already running (pid {pid}, pid file {self.path}); "
                        "stop it with `winnow gateway stop`"
                    ) from None
                self.path.unlink(missing_ok=True)  # its holder is gone: a stale file
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            return
        raise UsageError(f"could not create {self.path}; another gateway raced for it")

    def release(self) -> None:
        """Remove the file if this process (or nobody alive) holds it."""
        if self.holder() in (None, os.getpid()):
            self.path.unlink(missing_ok=True)


class Metrics:
    """The gateway's Prometheus metrics (served at ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.up = Gauge("winnow_gateway_up", "1 while the scheduler runs", registry=r)
        self.queue = Gauge(
            "winnow_gateway_queue_depth", "Jobs by queue state", ["state"], registry=r
        )
        self.active = Gauge("winnow_gateway_active_jobs", "Jobs running now", registry=r)
        self.finished = PromCounter(
            "winnow_gateway_jobs_finished", "Jobs finished by status", ["status"], registry=r
        )
        self.requeued = PromCounter(
            "winnow_gateway_jobs_requeued", "Stuck jobs put back in the queue", registry=r
        )
        self.batches = PromCounter(
            "winnow_gateway_batches",
            "Stage batches by outcome",
            ["stage", "outcome"],
            registry=r,
        )
        self.submitted = PromCounter(
            "winnow_gateway_jobs_submitted", "Queued jobs handed to a Ray cluster", registry=r
        )
        self.job_seconds = Histogram(
            "winnow_gateway_job_seconds",
            "Wall time of finished jobs",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 7200),
            registry=r,
        )


def serve_http(
    port: int, health: Callable[[], dict[str, Any]], registry: Any
) -> ThreadingHTTPServer:
    """Serve ``/health`` (``health()`` as JSON) and Prometheus ``/metrics`` on 127.0.0.1.

    Returns the running server (its ``server_address`` has the port bound).

    Raises:
        UsageError: nothing can listen on that port.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                self._send(200, "application/json", json.dumps(health()).encode())
            elif self.path.rstrip("/") == "/metrics":
                self._send(200, "text/plain; version=0.0.4", generate_latest(registry))
            else:
                self._send(404, "text/plain", b"not found: try /health or /metrics\n")

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise UsageError(
            f"gateway cannot listen on 127.0.0.1:{port} ({exc}); pass another --port"
        ) from None
    threading.Thread(target=server.serve_forever, name="gateway-http", daemon=True).start()
    return server


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(body, default=str)


def configure_logging() -> None:
    """Log ``winnow.*`` as JSON lines on stderr, at ``$WINNOW_LOG_LEVEL`` (default INFO)."""
    level = os.environ.get("WINNOW_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("winnow")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
