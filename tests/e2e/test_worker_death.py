"""A stage actor killed mid-batch: Ray restarts it, the batch is retried, output is unchanged."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests import processes
from tests.conftest import PACED, one_json, run_args, run_cli, run_json
from winnow import api


def test_killed_actor_is_restarted_and_output_matches_a_clean_run(
    tmp_path: Path, demo_inputs: list[str]
):
    clean = run_json(
        *run_args(PACED, tmp_path, demo_inputs, "batch_rows=300", state="s1", output="o1")
    )
    sets = ["batch_rows=300", "pace.delay_s=0.5"]
    args = [*run_args(PACED, tmp_path, demo_inputs, *sets, state="s2", output="o2"), "--json"]
    segments = tmp_path / "s2" / "stages" / "pace" / "segments"
    proc = processes.start_until(
        args, processes.has_files(segments), timeout=180, step=0.05, pipe=True, session=False
    )
    victims = processes.stage_workers(proc.pid)  # this run's actors, not another test's
    assert victims and proc.poll() is None
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    record = one_json(out)
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
