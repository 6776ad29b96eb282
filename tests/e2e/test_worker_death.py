"""A stage actor killed mid-batch: Ray restarts it, the batch is retried, output is unchanged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, run_cli, run_json
from winnow import api


def _stage_worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::StageWorker"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_killed_actor_is_restarted_and_output_matches_a_clean_run(
    tmp_path: Path, demo_inputs: list[str]
):
    common = [
        "tests/pipelines/paced.py",
        "--set",
        "batch_rows=300",
        *[a for i in demo_inputs for a in ("--input", i)],
    ]
    clean = run_json(
        "run", *common, "--state", str(tmp_path / "s1"), "--output", str(tmp_path / "o1")
    )
    args = [
        "run",
        *common,
        "--set",
        "pace.delay_s=0.5",
        "--state",
        str(tmp_path / "s2"),
        "--output",
        str(tmp_path / "o2"),
        "--json",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "winnow.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    segments = tmp_path / "s2" / "stages" / "pace" / "segments"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (segments.exists() and any(segments.iterdir())):
        time.sleep(0.05)
    victims = _stage_worker_pids()
    assert victims and proc.poll() is None
    for pid in victims:
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=False)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    assert record["status"] == "SUCCEEDED"
    assert sum(c["retried"] for c in record["counts"].values()) >= 1
    errors = api.open_state(str(tmp_path / "s2")).read_job(record["job_id"])["errors"]
    assert "WorkerDied" in errors
    # Same batches, same bytes: the manifests list the same artifacts in the same order.
    a = api.read_manifest(clean["manifest"])["batches"]
    b = api.read_manifest(record["manifest"])["batches"]
    assert [e["artifact"]["digest"] for e in a] == [e["artifact"]["digest"] for e in b]
    assert api.output_table(record).num_rows == clean["rows_out"]
    assert run_cli("verify", "--full", "--state", str(tmp_path / "s2")).returncode == 0
