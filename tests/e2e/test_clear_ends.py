"""Every command ends clearly: interrupts in every phase, a full disk, a lost driver,
and --json stdout that is exactly one object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import PACED, inputs_args, run_args, run_cli
from winnow import api

pytestmark = pytest.mark.slow

PRINTING = """
from dataclasses import dataclass
import sys
import pyarrow as pa
from winnow import Pipeline, Stage

@dataclass
class Chatty(Stage):
    name = "chatty"

    def process(self, batch):
        print("a stage printing to stdout", batch.num_rows)
        print("and to stderr", file=sys.stderr)
        return batch

pipeline = Pipeline(name="chatty", stages=[Chatty()], schema=pa.schema([("id", pa.int64())]))
"""


def _jsonl(path: Path, rows: int) -> str:
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(rows)))
    return str(path)


def test_json_stdout_is_one_object_even_when_stages_print(tmp_path):
    pipe = tmp_path / "chatty.py"
    pipe.write_text(PRINTING)
    args = [
        "run",
        str(pipe),
        "--input",
        _jsonl(tmp_path / "in.jsonl", 30),
        "--set",
        "batch_rows=10",
        "--state",
        str(tmp_path / "s"),
        "--output",
        str(tmp_path / "o"),
    ]
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout, not its last line
    assert summary["status"] == "SUCCEEDED" and summary["rows_out"] == 30

    # A failure with --json is an object too, with the exit code.
    bad = run_cli("run", str(tmp_path / "missing.py"), "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["exit_code"] == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_before_the_run_starts_ends_it_at_once(tmp_path, sig):
    """The state's store stalls every read (30 s): loading and planning hang there."""
    data = _jsonl(tmp_path / "in.jsonl", 20)
    proc = processes.start(
        [
            "run",
            "demo",
            "--input",
            data,
            "--state",
            f"faulty://{tmp_path}/state",
            "--output",
            str(tmp_path / "out"),
        ],
        env={"WINNOW_FAULTS": "stall=1,stall_s=30"},
        pipe=True,
        session=False,
    )
    time.sleep(4)
    assert proc.poll() is None, proc.communicate()
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 5
    assert "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "state" / "jobs").exists()  # nothing was recorded


def test_a_killed_driver_leaves_no_job_running(tmp_path, demo_inputs):
    args = run_args(PACED, tmp_path, demo_inputs, "batch_rows=300", "pace.delay_s=0.5")
    jobs = tmp_path / "state" / "jobs"
    proc = processes.start_until(
        args, processes.has_files(jobs), timeout=60, step=0.2, pipe=True, session=False
    )
    time.sleep(1.0)
    proc.kill()  # the driver alone: its Ray is left to notice
    proc.communicate()
    [record] = [json.loads(p.read_text()) for p in jobs.iterdir()]
    assert record["status"] == "RUNNING"  # what the killed driver left

    status = json.loads(run_cli("status", "--state", str(tmp_path / "state"), "--json").stdout)
    assert status["queue"]["running"] == 0 and status["queue"]["failed"] == 1
    listed = json.loads(run_cli("jobs", "--state", str(tmp_path / "state"), "--json").stdout)
    [job] = listed["jobs"]
    assert job["status"] == "FAILED"
    assert (
        "driver"
        in api.open_state(str(tmp_path / "state")).read_job(job["job_id"])["error"]["message"]
    )

    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "SUCCEEDED"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_fails_the_job_cleanly_and_keeps_committed_work(tmp_path, demo_inputs):
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(full)], check=True)
    try:
        state = str(tmp_path / "state")
        proc = run_cli(
            "run",
            "demo",
            "--profile",
            "local-cpu",
            "--set",
            "batch_rows=300",
            "--state",
            state,
            "--output",
            str(full / "out"),
            "--json",
            *inputs_args(demo_inputs),
        )
        assert proc.returncode == 1, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["status"] == "FAILED"
        assert summary["error"]["type"] == "StorageFailed"
        assert "No space left on device" in summary["error"]["message"]
        assert "Traceback" not in proc.stderr and "Unhandled error" not in proc.stderr
        [record] = api.open_state(state).list_jobs()
        assert record["status"] == "FAILED"
        leftovers = list((full / "out" / "artifacts" / "tmp").glob("*"))
        assert leftovers == []
        verify = run_cli("verify", "--state", state, "--json")
        assert verify.returncode == 0, verify.stdout  # whatever was committed is intact
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)
