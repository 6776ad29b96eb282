"""The real gateway daemon, driven as a subprocess: queue, status, /metrics, kills and stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import PACED, free_port, inputs_args, run_args, run_cli, run_json
from winnow import api
from winnow.errors import StateError


class Gw:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = str(tmp / "state")
        self.run_dir = str(tmp / "run")
        self.port = free_port()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args)

    def enqueue(self, inputs: list[str], *extra: str) -> str:
        proc = run_cli(
            "enqueue",
            PACED,
            "--state",
            self.state,
            "--output",
            str(self.tmp / "out"),
            "--set",
            "batch_rows=300",
            *extra,
            *inputs_args(inputs),
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        return str(json.loads(proc.stdout)["job_id"])

    def start(self, *extra: str) -> int:
        proc = run_cli(
            "gateway",
            "start",
            "--state",
            self.state,
            "--run-dir",
            self.run_dir,
            "--port",
            str(self.port),
            "--poll",
            "0.2",
            *extra,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return self.pid()

    def pid(self) -> int:
        return int((Path(self.run_dir) / "gateway.pid").read_text())

    def status(self) -> dict:
        proc = run_cli(
            "gateway", "status", "--json", "--state", self.state, "--run-dir", self.run_dir
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait(self, done: int, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.status()
            if data["queue"]["done"] >= done:
                return data
            time.sleep(0.5)
        raise AssertionError(f"not done in {timeout}s: {data}\n{self.log()}")

    def wait_running(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [
                j for j in api.open_state(self.state).list_jobs() if j["status"] == "RUNNING"
            ]
            segments = list(Path(self.state).glob("stages/pace/segments/*.jsonl"))
            if running and segments:
                return running[0]
            time.sleep(0.1)
        raise AssertionError("no job got going\n" + self.log())

    def http(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read().decode()

    def log(self) -> str:
        path = Path(self.run_dir) / "gateway.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if (Path(self.run_dir) / "gateway.pid").exists():
            run_cli("gateway", "stop", "--run-dir", self.run_dir, "--timeout", "120")


@pytest.fixture
def gw(tmp_path: Path):
    g = Gw(tmp_path)
    yield g
    g.stop()


def digests(record: dict) -> list[str]:
    return [e["artifact"]["digest"] for e in api.read_manifest(record["manifest"])["batches"]]


@pytest.mark.slow
def test_three_jobs_run_and_show_in_status_and_metrics(gw: Gw, demo_inputs: list[str]):
    jobs = [gw.enqueue(demo_inputs, "--set", f"pace.delay_s=0.0{k}") for k in range(3)]
    pid = gw.start()
    second = run_cli(
        "gateway", "start", "--state", gw.state, "--run-dir", gw.run_dir, "--port", str(gw.port)
    )
    assert second.returncode == 2 and f"pid {pid}" in second.stderr
    data = gw.wait(done=3)
    assert data["queue"] == {"pending": 0, "running": 0, "done": 3, "failed": 0}
    assert data["backlog"] == 0
    assert data["health"]["scheduler"] == "running" and data["health"]["pid"] == pid
    assert data["metrics"]["jobs"] == {"SUCCEEDED": 3}
    assert data["metrics"]["stages"]["pace"]["run"] == 3 * 15
    assert json.loads(gw.http("/health"))["status"] == "ok"
    metrics = gw.http("/metrics")
    assert 'winnow_gateway_jobs_finished_total{status="SUCCEEDED"} 3.0' in metrics
    assert 'winnow_gateway_queue_depth{state="done"} 3.0' in metrics
    text = run_cli("gateway", "status", "--verbose", "--state", gw.state, "--run-dir", gw.run_dir)
    for phrase in (
        "queue depth",
        "backlog",
        "worker health",
        "scheduler",
        "active_jobs",
        "runtime metrics",
        "latest snapshot",
        "memory",
        "journal size",
        "active work",
    ):
        assert phrase in text.stdout
    state = api.open_state(gw.state)
    for job_id in jobs:
        assert state.read_job(job_id)["status"] == "SUCCEEDED"
    stop = run_cli("gateway", "stop", "--run-dir", gw.run_dir)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not (Path(gw.run_dir) / "gateway.pid").exists()
    assert gw.status()["health"]["scheduler"] == "stopped"


@pytest.mark.slow
def test_sigkill_mid_job_then_restart_finishes_it_without_duplicates(
    gw: Gw, demo_inputs: list[str], tmp_path_factory: pytest.TempPathFactory
):
    clean_dir = tmp_path_factory.mktemp("clean")
    clean = run_json(
        *run_args(PACED, clean_dir, demo_inputs, "batch_rows=300", state="s", output="o")
    )
    job_id = gw.enqueue(demo_inputs, "--set", "pace.delay_s=0.3")
    pid = gw.start()
    gw.wait_running()
    os.killpg(pid, signal.SIGKILL)  # the daemon and the Ray it started
    # A killed daemon's pid stays alive until init reaps it (later on a loaded machine).
    processes.wait_for(lambda: gw.status()["health"]["scheduler"] != "running", 30, step=0.5)
    assert gw.status()["health"]["scheduler"].startswith("stopped (unclean exit")
    gw.start()
    gw.wait(done=1)
    record = api.open_state(gw.state).read_job(job_id)
    assert record["status"] == "SUCCEEDED" and record["attempts"] == 2
    assert "is gone" in record["requeued"]["reason"]
    assert record["counts"]["pace"]["skipped"] > 0  # what was committed before the kill
    assert digests(record) == digests(clean)
    ids = api.output_table(record).column("id").to_pylist()
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_sigterm_with_a_job_in_flight_exits_0_and_keeps_committed_work(
    gw: Gw, demo_inputs: list[str]
):
    job_id = gw.enqueue(demo_inputs, "--set", "pace.delay_s=0.3")
    pid = gw.start()
    gw.wait_running()
    os.kill(pid, signal.SIGTERM)
    exited = processes.wait_for(lambda: not processes.exists(pid), 120, step=0.1)
    assert exited, "the gateway did not exit on SIGTERM\n" + gw.log()
    assert '"msg": "gateway stopped"' in gw.log()
    state = api.open_state(gw.state)
    record = state.read_job(job_id)
    assert record["status"] == "PENDING" and "gateway stopped" in record["requeued"]["reason"]
    assert not list(Path(gw.state).glob("locks/*.json"))  # its lock was released
    committed = record["counts"]["pace"]["run"]
    assert committed > 0
    gw.start()
    gw.wait(done=1)
    final = state.read_job(job_id)
    assert final["status"] == "SUCCEEDED"
    assert final["counts"]["pace"]["skipped"] >= committed


def test_enqueue_bad_input_exits_2_and_queues_nothing(tmp_path: Path):
    proc = run_cli(
        "enqueue",
        "demo",
        "--input",
        str(tmp_path / "missing.jsonl"),
        "--state",
        str(tmp_path / "state"),
    )
    assert proc.returncode == 2
    assert not (tmp_path / "state" / "jobs").exists()


@pytest.mark.slow
def test_concurrent_clients_each_job_runs_exactly_once(gw: Gw, demo_inputs: list[str]):
    small = [demo_inputs[0]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = list(
            pool.map(lambda k: gw.enqueue(small, "--set", f"pace.fail_mod={k + 2}"), range(12))
        )
    assert len(set(jobs)) == 12
    gw.start()
    gw.wait(done=12)
    events = api.open_state(gw.state).read_events().events
    started = Counter(e["job_id"] for e in events if e["type"] == "job_started")
    assert {j: started[j] for j in jobs} == dict.fromkeys(jobs, 1)


def test_start_with_recover_repairs_a_corrupted_journal(gw: Gw):
    state = api.open_state(gw.state)
    state.prepare()
    state.append_events([{"ts": "t", "type": "job_started", "job_id": "a"}])
    day = next(Path(gw.state, "events").glob("*.jsonl"))
    with open(day, "ab") as fh:
        fh.write(b"\x00\x01 garbage in the middle\n")
    state.append_events([{"ts": "t", "type": "job_finished", "job_id": "a"}])
    with open(day, "ab") as fh:
        fh.write(b'{"ts": "t", "type": "torn')  # and a torn tail
    with pytest.raises(StateError, match="is not JSON") as broken:
        api.open_state(gw.state).read_events()
    assert day.name in str(broken.value)
    gw.start("--recover")
    assert processes.wait_for(lambda: "journal recovered" in gw.log(), 30, step=0.2)
    journal = api.open_state(gw.state).read_events()
    assert [e["type"] for e in journal.events][:2] == ["job_started", "job_finished"]
    assert journal.torn == []
    assert list(Path(gw.state, "events", "corrupt").glob("*.bak"))
    assert run_cli("status", "--state", gw.state).returncode == 0
