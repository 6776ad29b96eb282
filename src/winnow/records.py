"""The records that cross a layer, and the statuses they carry.

One home per concept: every status Winnow writes or compares is a member of
:class:`BatchStatus` or :class:`JobStatus`. Both are ``str`` enums whose
values are the exact strings stored today, so the JSON written to disk is
unchanged, and a status read back from disk (a plain ``str``) compares equal
to its member.
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    """The status of one (stage, batch): in a checkpoint, and in a stage result.

    A checkpoint holds one of :data:`CHECKPOINT_STATUSES`. ``INTEGRITY`` and
    ``STORAGE`` are results only: the stage actor returns them when the
    artifact failed verification or the store refused the write for good,
    and the driver commits either as a ``FAILED`` checkpoint (and stops the
    job). ``INTEGRITY`` is also a status label of the batch metric.
    """

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INVALIDATED = "INVALIDATED"  # `winnow invalidate`: recompute on the next run
    INTEGRITY = "INTEGRITY"
    STORAGE = "STORAGE"


CHECKPOINT_STATUSES = (
    BatchStatus.RUNNING,
    BatchStatus.SUCCEEDED,
    BatchStatus.FAILED,
    BatchStatus.INVALIDATED,
)


class JobStatus(StrEnum):
    """The status of a job record (``jobs/<job_id>.json``)."""

    PENDING = "PENDING"  # queued for the gateway
    SUBMITTED = "SUBMITTED"  # handed to a Ray cluster's Jobs API, its driver not yet started
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# A job in one of these never changes again (archiving moves only these).
JOB_TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# Running somewhere: here (RUNNING) or on a Ray cluster (SUBMITTED, or RUNNING
# once its driver there took the record over).
JOB_ACTIVE = (JobStatus.SUBMITTED, JobStatus.RUNNING)
