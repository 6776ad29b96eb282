"""Committing stage results and routing batches, on a real plan and checkpoint store (no Ray)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from winnow import api
from winnow.execution.commit import LEFT, Committer, Route
from winnow.execution.flight import Flight
from winnow.execution.outcome import Progress
from winnow.execution.retry import RetryPolicy
from winnow.plan import Plan
from winnow.records import SUMMARY_FIELDS, BatchStatus, ErrorRecord, SourceMeta, StageResult
from winnow.request import RunRequest

PACED = str(ROOT / "tests" / "pipelines" / "paced.py")


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(20)))
    session = api.resolve_session(
        RunRequest(
            PACED, "local-cpu", [str(source)], str(tmp_path / "out"), str(tmp_path / "state")
        )
    )
    return api.plan(session)


def committer(
    plan: Plan, tmp: Path, stop: threading.Event | None = None
) -> tuple[Committer, list[Any]]:
    events: list[dict[str, Any]] = []
    state = api.open_state(str(tmp / "state"))
    state.prepare()
    policy = RetryPolicy(max_attempts=2, backoff_s=1.0, jitter=lambda: 0.5)
    c = Committer(
        plan,
        "job-1",
        state.checkpoints("job-1"),
        "file:///store",
        policy,
        Progress(),
        stop or threading.Event(),
        events.append,
    )
    return c, events


def ok(digest: str) -> StageResult:
    artifact = {"uri": f"file:///store/{digest}", "digest": digest, "bytes": 7, "records": 5}
    return StageResult(BatchStatus.SUCCEEDED, artifact=artifact, rows_in=5, rows_out=5)


def committed(c: Committer) -> dict[str, list[dict[str, Any]]]:
    c.checkpoints.flush()
    return {n: list(c.checkpoints.load(n).records.values()) for n in c.names}


def test_a_success_is_committed_and_its_batch_moves_on_then_leaves(plan: Plan, tmp_path: Path):
    c, events = committer(plan, tmp_path)
    flight = Flight(0, plan.batches[0])
    first = ok("a" * 64)
    first.source_meta = SourceMeta(rows=5)
    assert c.commit(flight, first, output="ref-of-batch") == Route(1)
    assert flight.stage == 1 and flight.data == "ref-of-batch"
    assert flight.input_artifact == first.artifact and flight.meta is None
    assert c.commit(flight, ok("b" * 64), output=None) == LEFT
    assert c.finals[0] is not None and c.finals[0]["artifact"]["digest"] == "b" * 64
    # A run of 100,000 batches holds one final each: only what the manifest and a
    # reduce side read, not the record's source, timings and fingerprints.
    assert set(c.finals[0]) <= set(SUMMARY_FIELDS) and "source" not in c.finals[0]
    records = committed(c)
    [pace], [upper] = records["pace"], records["upper"]
    assert pace["status"] == upper["status"] == "SUCCEEDED" and pace["attempt"] == 1
    assert pace["source_rows"] == 5 and pace["bad_records"] == 0 and "blank_lines" not in pace
    assert upper["input_key"] == pace["key"] == plan.batches[0].keys[0]
    assert [e["type"] for e in events] == ["checkpoint", "checkpoint"]
    assert c.counts["pace"].run == 1 and c.counts["upper"].rows_out == 5


def test_a_failure_is_retried_then_poisoned_and_the_job_goes_on(plan: Plan, tmp_path: Path):
    c, events = committer(plan, tmp_path)
    flight = Flight(0, plan.batches[0])
    boom = StageResult(BatchStatus.FAILED, error=ErrorRecord("ValueError", "boom", "Traceback"))
    assert c.commit(flight, boom, None) == Route(0, retry_in=1.0)
    assert c.commit(flight, boom, None) == LEFT  # max_attempts=2
    assert not c.abort and c.counts["pace"].retried == 1 and c.counts["pace"].failed == 1
    [poisoned] = c.poisoned
    assert poisoned["attempts"] == 2 and poisoned["error_type"] == "ValueError"
    assert poisoned["source"]["start"] == 0
    assert c.errors["ValueError"]["count"] == 2 and c.errors["ValueError"]["stages"] == ["pace"]
    assert c.errors["ValueError"]["example"] == boom.failure.to_dict()
    [record] = committed(c)["pace"]
    assert record["status"] == "FAILED" and record["attempt"] == 2
    assert record["error"] == {"type": "ValueError", "message": "boom", "traceback": "Traceback"}
    assert [e["type"] for e in events] == ["retry", "batch_failed"]


def test_a_stopping_job_retries_nothing(plan: Plan, tmp_path: Path):
    stop = threading.Event()
    c, _ = committer(plan, tmp_path, stop)
    stop.set()
    lost = StageResult(BatchStatus.FAILED, error=ErrorRecord("WorkerDied", "gone", ""))
    assert c.commit(Flight(0, plan.batches[0]), lost, None) == LEFT


@pytest.mark.parametrize("status", [BatchStatus.INTEGRITY, BatchStatus.STORAGE])
def test_an_untrustworthy_or_full_store_stops_the_job(
    plan: Plan, tmp_path: Path, status: BatchStatus
):
    c, events = committer(plan, tmp_path)
    bad = StageResult(status, error=ErrorRecord("IntegrityError", "digest differs", ""))
    assert c.commit(Flight(0, plan.batches[0]), bad, None) == LEFT
    assert c.abort and c.counts["pace"].failed == 1
    [record] = committed(c)["pace"]
    assert record["status"] == "FAILED"  # a result status, never a checkpoint's
    if status == BatchStatus.INTEGRITY:
        assert c.integrity == [{"stage": "pace", "key": record["key"], "message": "digest differs"}]
        assert [e["type"] for e in events] == ["integrity"]
    else:
        assert c.storage_failure is not None and "file:///store" in c.storage_failure
