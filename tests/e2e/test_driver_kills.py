"""SIGKILL of `winnow run` at several moments, then the same command: identical output."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import PACED, run_args, run_cli, run_json
from winnow import api


def _args(inputs: list[str], where: Path, delay: float = 0.0) -> list[str]:
    return run_args(PACED, where, inputs, "batch_rows=300", f"pace.delay_s={delay}")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, demo_inputs: list[str]) -> dict:
    return run_json(*_args(demo_inputs, tmp_path_factory.mktemp("clean")))


def _first_artifact(where: Path) -> bool:
    base = where / "out" / "artifacts" / "sha256"
    return base.exists() and any(base.rglob("*.parquet"))


def _first_segment(where: Path) -> bool:
    return processes.has_files(where / "state" / "stages" / "upper" / "segments")()


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment",
    ["published-not-checkpointed", "first-checkpoint", "first-checkpoint+1s"],
)
def test_killed_driver_then_rerun_gives_the_clean_output(
    tmp_path: Path, demo_inputs: list[str], clean: dict, moment: str
):
    # 15 batches at 0.3 s: the first segment is flushed 2 s in (runner.FLUSH_EVERY_S), so
    # "+1s" still finds the run going (at 0.15 s, on a quick moment, it had ended).
    args = _args(demo_inputs, tmp_path, delay=0.3)
    ready = _first_artifact if moment == "published-not-checkpointed" else _first_segment
    proc = processes.start_until(args, lambda: ready(tmp_path), timeout=180)
    if moment.endswith("+1s"):
        time.sleep(1.0)
    assert proc.poll() is None, "the run finished before it could be killed"
    if moment == "published-not-checkpointed":
        assert not _first_segment(tmp_path)  # an artifact is out, its checkpoint is not
    processes.kill_group(proc)  # the driver and the Ray it started

    resumed = run_json(*_args(demo_inputs, tmp_path))
    assert resumed["status"] == "SUCCEEDED"
    ours = [e["artifact"]["digest"] for e in api.read_manifest(resumed["manifest"])["batches"]]
    theirs = [e["artifact"]["digest"] for e in api.read_manifest(clean["manifest"])["batches"]]
    assert ours == theirs
    table = api.output_table(resumed)
    assert table.equals(api.output_table(clean))
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids))  # no duplicates, and (with the digests) no loss
    assert run_cli("verify", "--full", "--state", str(tmp_path / "state")).returncode == 0


def test_setup_failure_fails_fast_with_its_message(tmp_path: Path, demo_inputs: list[str]):
    started = time.monotonic()
    proc = run_cli(
        *_args(demo_inputs, tmp_path), "--set", "upper.setup_error=model weights missing"
    )
    assert proc.returncode == 1, proc.stderr
    assert "stage 'upper' could not start" in proc.stderr
    assert "model weights missing" in proc.stderr
    assert time.monotonic() - started < 120  # no retrying forever
    [job] = api.open_state(str(tmp_path / "state")).list_jobs()
    assert job["status"] == "FAILED" and job["error"]["type"] == "SetupFailed"
