"""Queueing a run request: what is stored is what the gateway will run; and the queue's
view of a RUNNING job's runner: its process on this host, else its heartbeat."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import PACED, ROOT, run_json
from winnow import api
from winnow.gateway import queue
from winnow.gateway.queue import runner_gone
from winnow.request import RunRequest
from winnow.storage.state import now_iso

LEASE_S = 60.0


def test_a_queued_request_reads_back_as_asked_with_inputs_resolved(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "a"}\n')
    asked = RunRequest(
        str(ROOT / PACED),
        "local-cpu",
        [str(source)],
        str(tmp_path / "out"),
        str(tmp_path / "state"),
        ["batch_rows=10"],
        "full",
        "pace",
    )
    record = queue.enqueue(asked)
    stored = api.open_state(str(tmp_path / "state")).read_job(record["job_id"])
    assert stored["status"] == "PENDING"
    again = RunRequest.from_dict(stored["request"])
    # The gateway runs it against its own state; everything else is as asked.
    assert again == asked.but(state=None)


def test_enqueue_from_the_command_line_keeps_rerun(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "a"}\n')
    state = str(tmp_path / "state")
    out = run_json("enqueue", PACED, "--input", str(source), "--state", state, "--rerun", "pace")
    stored = api.open_state(state).read_job(out["job_id"])["request"]
    assert stored["rerun"] == "pace" and stored["inputs"] == [str(source)]


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
