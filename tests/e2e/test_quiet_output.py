"""A local run's output is Winnow's own: no Ray token WARNING, no actor lines between
the progress bars, and where the actors' output went when something failed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import PACED, run_cli, run_json

pytestmark = pytest.mark.slow

FLAKY = "tests/pipelines/flaky.py"


def test_a_failing_local_run_is_quiet_and_says_where_the_actor_logs_are(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(60)))
    (tmp_path / "marks").mkdir()
    proc = run_cli(
        "run", FLAKY, "--profile", "local-cpu", "--input", str(source),
        "--state", str(tmp_path / "state"), "--output", str(tmp_path / "out"),
        "--set", "batch_rows=20", "--set", "max_attempts=1", "--set", "flaky.fail_mod=20",
        "--set", "flaky.fail_times=5", "--set", f"flaky.marks={tmp_path / 'marks'}",
        "--set", "retry_backoff_s=0",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = " ".join(proc.stderr.split())
    assert "Token authentication" not in err
    assert not re.search(r"\((StageWorker|SourceReader) pid=\d+", proc.stderr)
    found = re.search(
        r"what the stage actors printed \(worker-\*\.out, worker-\*\.err\) is in (\S+)", err
    )
    assert found is not None, err[-2000:]
    assert list(Path(found.group(1)).glob("worker-*.err"))


def test_rows_per_second_counts_the_work_a_downstream_rerun_did(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(40)))
    args = ["run", PACED, "--profile", "local-cpu", "--input", str(source), "--executor", "local"]
    args += ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    run_json(*args)
    again = run_json(*args, "--rerun", "upper")  # the first stage is skipped, the second runs
    assert again["counts"]["pace"]["run"] == 0 and again["counts"]["upper"]["run"] > 0
    assert again["throughput_rows_s"] > 0
