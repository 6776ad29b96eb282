"""Two runs of one pipeline on one state: the second is refused; a killed holder's lock is stale.

`winnow lock release --force` on a hand-written lock: tests/cli/test_data.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests import processes
from tests.conftest import PACED, one_json, run_args, run_cli


def test_concurrent_run_is_refused_and_a_killed_holder_is_taken_over(
    tmp_path: Path, demo_inputs: list[str]
):
    state = ["--state", str(tmp_path / "state")]
    args = run_args(PACED, tmp_path, demo_inputs, "batch_rows=300", "pace.delay_s=1.0")
    lock_file = tmp_path / "state" / "locks" / "paced.json"
    holder = processes.start_until(
        args, lock_file.exists, timeout=120, step=0.05, log=tmp_path / "holder", session=False
    )
    assert lock_file.exists(), "no lock"
    held = json.loads(lock_file.read_text())
    try:
        second = run_cli(*args)
        assert second.returncode == 2, second.stderr
        assert "already running" in second.stderr
        assert held["job_id"] in second.stderr and str(holder.pid) in second.stderr
        assert not list((tmp_path / "state" / "jobs").glob("*.json")) or all(
            json.loads(p.read_text())["job_id"] == held["job_id"]
            for p in (tmp_path / "state" / "jobs").glob("*.json")
        )  # the refused run wrote no job record

        status = json.loads(run_cli("lock", "status", "--json", *state).stdout)
        [lock] = status["locks"]
        assert lock["job_id"] == held["job_id"] and lock["stale"] is None
        refused = run_cli("lock", "release", "paced", *state)
        assert refused.returncode == 2 and "--force" in refused.stderr
    finally:
        holder.kill()  # the holder alone: its lock stays behind
        holder.wait(timeout=30)

    status = json.loads(run_cli("lock", "status", "--json", *state).stdout)
    assert "is gone" in status["locks"][0]["stale"]
    resumed = run_cli(*args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "took over a stale lock" in resumed.stderr
    assert one_json(resumed.stdout)["status"] == "SUCCEEDED"
    assert not lock_file.exists()  # released at the end of the run
