"""Snapshots: counts rebuilt from a hand-built state, and restores that verify checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from winnow.cli import maintenance as maintenance_cli
from winnow.errors import UsageError
from winnow.gateway import snapshots
from winnow.records import BatchStatus
from winnow.storage.artifacts import ArtifactRef, ArtifactStore
from winnow.storage.fs import join
from winnow.storage.state import State, event

REQUEST = {"pipeline": "demo", "profile": "local-cpu", "inputs": ["in.jsonl"], "output": "out"}
JOBS: list[dict[str, Any]] = [
    {"job_id": "q-pending", "status": "PENDING", "request": REQUEST, "attempts": 0},
    {"job_id": "q-running", "status": "RUNNING", "request": REQUEST, "attempts": 1},
    {"job_id": "fg-running", "status": "RUNNING", "host": "elsewhere", "pid": 1},
    {"job_id": "ok-1", "status": "SUCCEEDED", "counts": {"clean": {"run": 3}}},
    {"job_id": "ok-2", "status": "SUCCEEDED"},
    {"job_id": "bad", "status": "FAILED"},
    {"job_id": "stopped", "status": "CANCELLED"},
]


def cli(*args: str) -> click.testing.Result:
    group = click.Group()
    maintenance_cli.register(group)
    return CliRunner().invoke(group, list(args))


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Any]:
    """A state with known jobs, checkpoints (real artifacts) and events."""
    state = State(str(tmp_path / "state"))
    state.prepare()
    for i, job in enumerate(JOBS):
        state.write_job(
            {"pipeline": "demo", "created_at": f"2026-01-0{i + 1}T00:00:00.000+00:00", **job}
        )
    store = ArtifactStore(str(tmp_path / "out" / "artifacts"))
    refs: dict[str, ArtifactRef] = {}
    checkpoints = state.checkpoints(job_id="ok-1")
    for stage, statuses in {
        "clean": [
            BatchStatus.SUCCEEDED,
            BatchStatus.SUCCEEDED,
            BatchStatus.SUCCEEDED,
            BatchStatus.FAILED,
        ],
        "embed": [BatchStatus.SUCCEEDED, BatchStatus.SUCCEEDED],
    }.items():
        for i, status in enumerate(statuses):
            key = f"{stage}-{i}"
            rec: dict[str, Any] = {"stage": stage, "key": key, "status": status, "job_id": "ok-1"}
            if status == BatchStatus.SUCCEEDED:
                refs[key] = store.put_bytes(
                    json.dumps({"stage": stage, "i": i}).encode() + b"\n", "jsonl", 1
                )
                rec["artifact"] = refs[key].to_dict()
            checkpoints.append(rec)
    checkpoints.flush()
    state.append_events(
        [event("job_started", "ok-1")]
        + [event("batch_done", "ok-1", key=k) for k in refs]
        + [event("job_finished", "ok-1")]
    )
    return {"state": state, "store": store, "refs": refs}


def test_snapshot_counts_match_the_state(built: dict[str, Any]):
    state: State = built["state"]
    snap = snapshots.build_snapshot(state)
    assert snap["queue_depth"] == {"pending": 1, "running": 2, "done": 2, "failed": 2}
    assert snap["backlog"] == 3
    assert snap["job_status_counts"] == {
        "CANCELLED": 1,
        "FAILED": 1,
        "PENDING": 1,
        "RUNNING": 2,
        "SUCCEEDED": 2,
    }
    assert snap["checkpoints"] == {
        "clean": {BatchStatus.FAILED: 1, BatchStatus.SUCCEEDED: 3},
        "embed": {BatchStatus.SUCCEEDED: 2},
    }
    assert snap["events"] == {
        "total": 7,
        "by_type": {"batch_done": 5, "job_finished": 1, "job_started": 1},
    }
    assert snap["journal_torn"] == []
    assert snap["state_url"] == state.display() and snap["version"] == "state/v1"
    by_id = {j["job_id"]: j for j in snap["jobs"]}
    assert set(by_id) == {j["job_id"] for j in JOBS}
    assert by_id["q-running"]["record"]["request"] == REQUEST  # what a restore reruns
    assert by_id["ok-1"]["record"]["counts"] == {"clean": {"run": 3}}
    for entry in snap["jobs"]:
        assert {"job_id", "status", "pipeline", "created_at"} <= set(entry)


def test_snapshot_cli_writes_the_file_and_prints_the_counts(built: dict[str, Any]):
    state: State = built["state"]
    [day] = Path(state.root, "events").glob("*.jsonl")
    with open(day, "ab") as fh:
        fh.write(b'{"type": "torn')  # a crash mid-append: left out and reported
    result = cli("snapshot", "--name", "state-latest.json", "--state", state.url)
    assert result.exit_code == 0, result.output
    path = join(state.root, "snapshots", "state-latest.json")
    written = json.loads(Path(path).read_text())
    assert written["job_status_counts"]["RUNNING"] == 2
    out = result.output
    assert f"snapshot: {path}" in out
    assert "queue depth: pending 1, running 2, done 2, failed 2 (backlog 3)" in out
    assert "job status counts: CANCELLED 1, FAILED 1, PENDING 1, RUNNING 2, SUCCEEDED 2" in out
    assert "  clean: FAILED 1, SUCCEEDED 3" in out and "  embed: SUCCEEDED 2" in out
    assert "events: 7 total; by type: batch_done 5, job_finished 1, job_started 1" in out
    assert "torn journal line (left out)" in out
    data = json.loads(cli("snapshot", "--state", state.url, "--json").output)
    assert data["path"].endswith("/snapshots/state-latest.json")
    assert data["checkpoints"]["embed"] == {BatchStatus.SUCCEEDED: 2}


def test_latest_snapshot_is_chosen_by_created_at(built: dict[str, Any]):
    state: State = built["state"]
    assert snapshots.latest_snapshot(state) is None
    for name, created in (("b.json", "2026-03-01T00:00:00"), ("a.json", "2026-04-01T00:00:00")):
        snapshots.write_snapshot(state, name)
        path = Path(state.root, "snapshots", name)
        path.write_text(json.dumps({**json.loads(path.read_text()), "created_at": created}))
    Path(state.root, "snapshots", "broken.json").write_text("{")
    name, data = snapshots.latest_snapshot(state)  # type: ignore[misc]
    assert name == "a.json" and data["created_at"] == "2026-04-01T00:00:00"
    with pytest.raises(UsageError, match=r"ending in \.json"):
        snapshots.write_snapshot(state, "../escape.json")


def test_restore_rebuilds_the_queue_and_marks_a_lost_artifact_failed(built: dict[str, Any]):
    state: State = built["state"]
    snapshots.write_snapshot(state, "before-loss.json")
    for path in Path(state.root, "jobs").iterdir():
        path.unlink()
    lost = built["refs"]["clean-1"]
    Path(built["store"].path_for(lost.digest, "jsonl")).unlink()

    result = cli("restore-snapshot", "--latest", "--state", state.url)

    assert result.exit_code == 0, result.output
    jobs = {j["job_id"]: j for j in state.list_jobs()}
    assert set(jobs) == {j["job_id"] for j in JOBS}
    assert jobs["q-pending"]["status"] == "PENDING"
    assert jobs["q-running"]["status"] == "PENDING"  # in flight: rerun, not resumed
    assert jobs["q-running"]["request"] == REQUEST
    assert jobs["fg-running"]["status"] == "FAILED"
    assert "rerun the same command" in jobs["fg-running"]["error"]["message"]
    for job_id in ("ok-1", "ok-2", "bad", "stopped"):
        assert jobs[job_id]["status"] == next(j["status"] for j in JOBS if j["job_id"] == job_id)
        assert jobs[job_id]["restored"]["snapshot"] == "before-loss.json"
    clean = state.checkpoints().load("clean").records
    assert clean["clean-1"]["status"] == BatchStatus.FAILED
    assert "missing" in clean["clean-1"]["error"]["message"]
    assert [clean[f"clean-{i}"]["status"] for i in (0, 2)] == [
        BatchStatus.SUCCEEDED,
        BatchStatus.SUCCEEDED,
    ]
    out = result.output
    assert "restored 7 job records" in out
    assert "q-running: missing -> PENDING (was RUNNING in the snapshot)" in out
    assert "checkpoints: verified 5 succeeded artifacts (size), 1 marked FAILED" in out


def test_restore_keeps_records_written_after_the_snapshot(built: dict[str, Any]):
    state: State = built["state"]
    snapshots.write_snapshot(state, "s.json")
    time.sleep(0.02)
    finished = {**state.read_job("q-running"), "status": "SUCCEEDED"}
    state.write_job(finished)  # the run finished after the snapshot was taken
    result = snapshots.restore_snapshot(state, name="s.json")
    assert result["kept_newer"] == ["q-running"]
    assert result["restored"] == [] and result["unchanged"] == len(JOBS) - 1
    assert state.read_job("q-running")["status"] == "SUCCEEDED"
    assert result["checkpoints"] == {"verified": 5, "marked_failed": 0, "mismatches": []}


def test_restore_needs_exactly_one_snapshot(built: dict[str, Any]):
    state: State = built["state"]
    with pytest.raises(UsageError, match="--latest or --name"):
        snapshots.restore_snapshot(state)
    with pytest.raises(UsageError, match="--latest or --name"):
        snapshots.restore_snapshot(state, name="x.json", latest=True)
    with pytest.raises(UsageError, match="gateway snapshot"):
        snapshots.restore_snapshot(state, latest=True)
    result = cli("restore-snapshot", "--name", "nope.json", "--state", state.url)
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
