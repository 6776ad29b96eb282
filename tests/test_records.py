"""The statuses and records that cross a layer (``winnow.records``)."""

from __future__ import annotations

import json

from winnow.records import (
    CHECKPOINT_STATUSES,
    JOB_TERMINAL,
    MESSAGE_LIMIT,
    TRACEBACK_LIMIT,
    BatchStatus,
    CheckpointRecord,
    ErrorRecord,
    JobStatus,
    SourceRows,
    StageResult,
)


def test_statuses_are_the_strings_stored_before_they_were_enums():
    assert [s.value for s in BatchStatus] == [
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "INVALIDATED",
        "INTEGRITY",
        "STORAGE",
    ]
    assert [s.value for s in JobStatus] == [
        "PENDING",
        "SUBMITTED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
    ]
    # A status read back from JSON is a plain str: it must equal, and hash like,
    # its member (a Counter or dict keyed by either finds the other).
    for status in [*BatchStatus, *JobStatus]:
        assert status == status.value and hash(status) == hash(status.value)
        assert str(status) == f"{status}" == status.value


def test_json_written_with_a_status_is_byte_identical():
    record = {"status": BatchStatus.SUCCEEDED, "counts": {JobStatus.FAILED: 1}}
    assert json.dumps(record) == '{"status": "SUCCEEDED", "counts": {"FAILED": 1}}'
    assert json.dumps(record, sort_keys=True, default=str) == json.dumps(
        {"counts": {"FAILED": 1}, "status": "SUCCEEDED"}, sort_keys=True
    )


def test_only_checkpoint_statuses_are_valid_on_disk_and_terminal_jobs_are_final():
    assert "INTEGRITY" not in CHECKPOINT_STATUSES and "STORAGE" not in CHECKPOINT_STATUSES
    assert set(CHECKPOINT_STATUSES) == {"RUNNING", "SUCCEEDED", "FAILED", "INVALIDATED"}
    assert set(JOB_TERMINAL) == {"SUCCEEDED", "FAILED", "CANCELLED"}


def test_an_error_record_has_one_shape_and_clips_what_it_keeps():
    try:
        raise ValueError("x" * 3000)
    except ValueError as exc:
        error = ErrorRecord.of(exc)
    assert error.type == "ValueError" and error.message == "x" * MESSAGE_LIMIT
    assert error.traceback is not None and "raise ValueError" in error.traceback
    assert len(error.traceback) <= TRACEBACK_LIMIT
    assert list(error.to_dict()) == ["type", "message", "traceback"]
    assert ErrorRecord.from_dict(error.to_dict()) == error
    # A job record's error has no traceback field at all.
    job = ErrorRecord.of(RuntimeError("gone"), kind="DriverLost", with_traceback=False)
    assert job.to_dict() == {"type": "DriverLost", "message": "gone"}
    assert ErrorRecord.of(ValueError("y" * 3000), clip=False).message == "y" * 3000


def _record(**changes: object) -> CheckpointRecord:
    fields = {
        "stage": "clean",
        "fingerprint": "f" * 64,
        "stage_version": None,
        "key": "k" * 64,
        "input_key": "i" * 64,
        "batch": "b" * 64,
        "source": SourceRows("file:///in.jsonl", 0, 10),
        "attempt": 1,
        "job_id": "demo-1",
        "status": BatchStatus.SUCCEEDED,
    }
    return CheckpointRecord(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_checkpoint_record_writes_the_keys_in_the_order_segments_always_had():
    ok = _record(
        started_at=1.0,
        duration_s=0.5,
        rows_in=10,
        rows_out=9,
        source_rows=12,
        bad_records=2,
        quarantine={"count": 2},
        artifact={"digest": "d" * 64, "bytes": 5},
        ts=2.0,
    )
    line = json.dumps(ok.to_dict(), separators=(",", ":"))
    assert list(ok.to_dict()) == [
        "stage",
        "fingerprint",
        "stage_version",  # written even when None
        "key",
        "input_key",
        "batch",
        "source",
        "attempt",
        "job_id",
        "started_at",
        "duration_s",
        "rows_in",
        "rows_out",
        "source_rows",
        "bad_records",
        "quarantine",
        "status",
        "artifact",
        "ts",
    ]
    assert ok.to_dict()["source"] == {"file": "file:///in.jsonl", "start": 0, "stop": 10}
    back = CheckpointRecord.from_dict(json.loads(line))
    assert back == ok and json.dumps(back.to_dict(), separators=(",", ":")) == line
    failed = _record(status=BatchStatus.FAILED, error=ErrorRecord("WorkerDied", "lost", ""))
    assert list(failed.to_dict())[-2:] == ["status", "error"]
    assert failed.to_dict()["error"] == {"type": "WorkerDied", "message": "lost", "traceback": ""}


def test_keys_a_checkpoint_record_does_not_know_survive_a_round_trip():
    data = {**_record(ts=1.0).to_dict(), "invalidated": True}
    back = CheckpointRecord.from_dict(data)
    assert back.extra == {"invalidated": True} and back.to_dict() == data


def test_a_failed_result_without_an_error_fails_as_unknown():
    assert StageResult(BatchStatus.FAILED).failure == ErrorRecord("Unknown", "", "")
