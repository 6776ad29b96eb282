"""The queue's view of a RUNNING job's runner: its process on this host, else its heartbeat."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

from winnow.gateway.queue import runner_gone
from winnow.storage.state import now_iso

LEASE_S = 60.0


def _job(**fields: Any) -> dict[str, Any]:
    return {"job_id": "j", "status": "RUNNING", "created_at": now_iso(), **fields}


def test_a_live_runner_on_this_host_is_not_gone_whatever_its_heartbeat() -> None:
    job = _job(host=socket.gethostname(), pid=os.getpid())
    assert runner_gone(job, time.time() + 10 * LEASE_S, LEASE_S) is None


def test_a_dead_runner_on_this_host_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    job = _job(host=socket.gethostname(), pid=proc.pid)
    assert runner_gone(job, time.time(), LEASE_S) == f"its process {proc.pid} is gone"


def test_a_runner_elsewhere_is_judged_by_its_heartbeat() -> None:
    job = _job(host="elsewhere", pid=1)
    assert runner_gone(job, time.time(), LEASE_S) is None
    reason = runner_gone(job, time.time() + 2 * LEASE_S, LEASE_S)
    assert reason is not None and reason.startswith("no heartbeat for")


def test_a_runner_without_a_pid_is_judged_by_its_heartbeat() -> None:
    job = _job(host=socket.gethostname())
    assert runner_gone(job, time.time() + 2 * LEASE_S, LEASE_S) is not None
