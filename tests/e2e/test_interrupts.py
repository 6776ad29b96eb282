"""Ctrl-C/SIGTERM stop a run cleanly with exit 130; a finished stage's CPUs go to the next pool.

How pools are sized to fit the cluster: tests/execution/test_cluster.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import PACED, inputs_args, run_args, run_json

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_with_exit_130_and_rerun_finishes(tmp_path: Path, demo_inputs, sig):
    sets = ["batch_rows=200", "pace.delay_s=0.4"]
    args = run_args(PACED, tmp_path, demo_inputs, *sets, profile="local-cpu")
    segments = tmp_path / "state" / "stages" / "pace" / "segments"
    proc = processes.start_until(
        args, processes.has_files(segments), timeout=240, step=0.05, pipe=True, session=False
    )
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    jobs = [json.loads(p.read_text()) for p in (tmp_path / "state" / "jobs").glob("*.json")]
    assert [j["status"] for j in jobs] == ["CANCELLED"]
    done = jobs[0]["counts"]["pace"]["run"]
    assert done > 0
    resumed = run_json(*args)
    assert resumed["status"] == "SUCCEEDED"
    assert resumed["counts"]["pace"]["skipped"] >= done


def test_a_finished_stage_frees_its_cpus_and_the_next_pool_grows(tmp_path: Path, demo_inputs):
    """2 CPUs: pace (1 CPU) and upper (1 CPU, up to 2 actors) start with one actor
    each. Once every batch is past pace, its actor is stopped and upper, still
    backlogged, grows to two actors."""
    common = [
        "tests/pipelines/paced.py",
        *inputs_args(demo_inputs),
        "--set", "batch_rows=150",
        "--set", "ray_num_cpus=2",
        "--set", "max_in_flight=64",
        "--set", "pace.num_cpus=1",
        "--set", "upper.num_cpus=1",
        "--set", "upper.max_actors=2",
    ]  # fmt: skip
    grown = run_json(
        "run", *common, "--set", "upper.delay_s=0.4",
        "--state", str(tmp_path / "s1"), "--output", str(tmp_path / "o1"),
    )  # fmt: skip
    assert grown["status"] == "SUCCEEDED"
    from winnow import api

    st = api.open_state(str(tmp_path / "s1"))
    pids = {r["pid"] for r in st.checkpoints().load("upper").records.values()}
    assert len(pids) == 2, pids
    kinds = [e["type"] for e in st.read_events(grown["job_id"]).events]
    assert "pool_retired" in kinds and "pool_grown" in kinds
