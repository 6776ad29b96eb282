"""Queueing a run request: what is stored is what the gateway will run."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PACED, ROOT, run_json
from winnow import api
from winnow.gateway import queue
from winnow.request import RunRequest


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
