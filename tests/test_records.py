"""The statuses and records that cross a layer (``winnow.records``)."""

from __future__ import annotations

import json

from winnow.records import CHECKPOINT_STATUSES, JOB_TERMINAL, BatchStatus, JobStatus


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
