"""The records that cross a layer, and the statuses they carry.

One home per concept: every status Winnow writes or compares is a member of
:class:`BatchStatus` or :class:`JobStatus`. Both are ``str`` enums whose
values are the exact strings stored today, so the JSON written to disk is
unchanged, and a status read back from disk (a plain ``str``) compares equal
to its member.

The records: :class:`StageResult` (what a stage actor returns to the driver,
with :class:`SourceMeta` from reading a source batch), :class:`CheckpointRecord`
(what the driver commits for it) and :class:`ErrorRecord` (the one shape of
an error, in checkpoints, job records and error groups). Pure data: nothing
here knows Ray or storage.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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


MESSAGE_LIMIT = 2000  # characters of an error message kept in a record
TRACEBACK_LIMIT = 8000  # characters of a traceback kept (its end: the raise site)


@dataclass(frozen=True)
class ErrorRecord:
    """What went wrong, as a checkpoint, a job record or an error group stores it.

    Attributes:
        type: the exception's type name, or a name of ours (``WorkerDied``,
            ``DriverLost``, ...).
        message: what it said.
        traceback: the formatted traceback; ``""`` when there is none to show.
            None leaves the field out: a job record's error has none.
    """

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def clipped(cls, kind: str, message: str, traceback: str | None = None) -> ErrorRecord:
        """A record with the message and traceback cut to what a record keeps."""
        text = None if traceback is None else traceback[-TRACEBACK_LIMIT:]
        return cls(kind, message[:MESSAGE_LIMIT], text)

    @classmethod
    def of(
        cls,
        exc: BaseException,
        kind: str | None = None,
        with_traceback: bool = True,
        clip: bool = True,
    ) -> ErrorRecord:
        """The record of ``exc``: its type name (or ``kind``), message and traceback.

        Args:
            exc: the exception.
            kind: the type to record instead of the exception's own name.
            with_traceback: keep the formatted traceback; a job-level error
                record has none.
            clip: cut the message (and traceback) to what a record keeps.
        """
        name = kind or type(exc).__name__
        text = "".join(traceback.format_exception(exc)) if with_traceback else None
        if clip:
            return cls.clipped(name, str(exc), text)
        return cls(name, str(exc), text)

    def to_dict(self) -> dict[str, str]:
        """The record as JSON-ready fields; ``traceback`` only when there is one."""
        out = {"type": self.type, "message": self.message}
        if self.traceback is not None:
            out["traceback"] = self.traceback
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorRecord:
        """Rebuild a record from what ``to_dict`` wrote."""
        return cls(str(data["type"]), str(data["message"]), data.get("traceback"))


UNKNOWN_ERROR = ErrorRecord("Unknown", "", "")  # a failed result that said nothing


@dataclass(frozen=True)
class SourceMeta:
    """What reading one source batch found: rows read, bad ones, their quarantine.

    Attributes:
        rows: rows read, bad and blank ones included.
        bad: bad records (set aside, quarantined or not).
        blank: blank JSONL lines: rows read that hold no record.
        quarantine: the quarantine artifact's record (``count``, ``artifact``,
            ``errors``), None when nothing was quarantined.
    """

    rows: int
    bad: int = 0
    blank: int = 0
    quarantine: dict[str, Any] | None = None


@dataclass
class StageResult:
    """What a stage actor returns to the driver for one batch.

    A small record: the batch itself stays in Ray's object store.

    ``status`` is SUCCEEDED with ``artifact`` (a verified ``ArtifactRef`` as a
    dict), or FAILED, INTEGRITY or STORAGE with ``error``. A measurement is
    None when the batch failed before it was taken (a worker lost before it
    ran has none at all).
    """

    status: BatchStatus
    error: ErrorRecord | None = None
    artifact: dict[str, Any] | None = None
    source_meta: SourceMeta | None = None  # the first stage's: what reading its batch found
    started_at: float | None = None
    duration_s: float | None = None
    process_s: float | None = None
    commit_s: float | None = None
    node: str | None = None
    node_id: str | None = None
    pid: int | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    metrics: dict[str, Any] | None = None  # the stage's batch_metrics(), when it has any
    shards: dict[str, dict[str, Any]] | None = None  # a grouping map side's: partition -> ref
    removed: dict[str, Any] | None = None  # a grouping reduce side's removed rows (a ref)

    @property
    def failure(self) -> ErrorRecord:
        """The error of a result that did not succeed."""
        return self.error or UNKNOWN_ERROR


# A checkpoint's measurements, copied from its stage result, in the order written.
MEASUREMENTS = (
    "started_at",
    "duration_s",
    "process_s",
    "commit_s",
    "node",
    "node_id",
    "pid",
    "rows_in",
    "rows_out",
    "metrics",
)


@dataclass(frozen=True)
class SourceRows:
    """Rows ``[start, stop)`` of one input file: where a batch came from."""

    file: str
    start: int
    stop: int

    def to_dict(self) -> dict[str, Any]:
        """The range as JSON-ready fields."""
        return {"file": self.file, "start": self.start, "stop": self.stop}


@dataclass
class CheckpointRecord:
    """One checkpoint: the state of one (stage, batch key), as a segment line stores it.

    ``to_dict`` writes the keys in the order the driver always wrote them and
    leaves out every optional field that is None, so a segment's bytes are
    what they were when this was a dict; ``from_dict`` reads such a line back
    (keys this version does not know are kept in ``extra`` and written last).

    Attributes:
        stage: the stage's name.
        fingerprint: the stage fingerprint the batch was computed under.
        stage_version: the stage's ``version`` (for ``winnow invalidate --version``).
        key: the batch key at this stage.
        input_key: the key of its input (the previous stage's, or the source batch's).
        batch: the source batch's key.
        source: the input rows it came from.
        attempt: how many times this stage has run the batch, this time included.
        job_id: the job that wrote it.
        status: SUCCEEDED, FAILED, INVALIDATED (or RUNNING).
        artifact: the verified artifact (SUCCEEDED only).
        shards: a grouping stage's map side: its shard artifact per partition.
        removed: a grouping stage's reduce side: the artifact of the rows it removed.
        error: what went wrong (FAILED only).
        ts: when it was appended; set by the checkpoint store.
    """

    stage: str
    fingerprint: str
    stage_version: Any
    key: str
    input_key: str
    batch: str
    source: SourceRows
    attempt: int
    job_id: str
    status: BatchStatus
    started_at: float | None = None
    duration_s: float | None = None
    process_s: float | None = None
    commit_s: float | None = None
    node: str | None = None
    node_id: str | None = None
    pid: int | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    metrics: dict[str, Any] | None = None
    source_rows: int | None = None  # the first stage's: rows read, bad and blank ones included
    bad_records: int | None = None
    blank_lines: int | None = None
    quarantine: dict[str, Any] | None = None
    artifact: dict[str, Any] | None = None
    shards: dict[str, dict[str, Any]] | None = None
    removed: dict[str, Any] | None = None
    error: ErrorRecord | None = None
    ts: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as a segment line stores it.

        Fields in a fixed order, unset ones left out (``stage_version`` always
        kept), unknown ones from ``extra`` last.
        """
        out: dict[str, Any] = {}
        for name in _CHECKPOINT_ORDER:
            value = getattr(self, name)
            if value is None and name != "stage_version":
                continue
            out[name] = value.to_dict() if isinstance(value, SourceRows | ErrorRecord) else value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointRecord:
        """The record in a segment line; fields this Winnow does not know are kept in ``extra``."""
        known = {k: v for k, v in data.items() if k in _CHECKPOINT_ORDER}
        known["source"] = SourceRows(**data["source"])
        known["status"] = BatchStatus(data["status"])
        if data.get("error") is not None:
            known["error"] = ErrorRecord.from_dict(data["error"])
        extra = {k: v for k, v in data.items() if k not in _CHECKPOINT_ORDER}
        return cls(**known, extra=extra)


_CHECKPOINT_ORDER = (
    "stage",
    "fingerprint",
    "stage_version",
    "key",
    "input_key",
    "batch",
    "source",
    "attempt",
    "job_id",
    *MEASUREMENTS,
    "source_rows",
    "bad_records",
    "blank_lines",
    "quarantine",
    "status",
    "artifact",
    "shards",
    "removed",
    "error",
    "ts",
)


# The fields of a checkpoint record that planning and a run's outcome read: the
# decision (status, attempt, error, every artifact ``record_artifacts`` names),
# the row counts (``accounting.row_counts``) and the order (key, ts). A plan holds
# one record per (stage, batch), and a run one per finished batch; the rest of a
# record (source, timings, fingerprints: most of its bytes) stays in its segment.
SUMMARY_FIELDS = (
    "key",
    "ts",
    "status",
    "attempt",
    "error",
    "artifact",
    "quarantine",
    "shards",
    "removed",
    "rows_in",
    "rows_out",
    "source_rows",
    "bad_records",
    "blank_lines",
)


def summary(rec: dict[str, Any]) -> dict[str, Any]:
    """The ``SUMMARY_FIELDS`` a checkpoint record has, as a new dict."""
    return {k: rec[k] for k in SUMMARY_FIELDS if k in rec}


def record_artifacts(rec: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every artifact a checkpoint record references, each named as messages name it.

    Its output (``artifact``), its quarantine, a grouping map side's shards
    and a reduce side's removed rows. The one list that plan (skip), verify
    and gc read, so none of them misses an artifact the others know.
    """
    found: list[tuple[str, Any]] = [("artifact", rec.get("artifact"))]
    quarantine = rec.get("quarantine")
    if isinstance(quarantine, dict) and quarantine.get("artifact") is not None:
        found.append(("quarantine artifact", quarantine["artifact"]))
    shards = rec.get("shards")
    if isinstance(shards, dict):
        found += [(f"shard {p}", ref) for p, ref in sorted(shards.items())]
    if rec.get("removed") is not None:
        found.append(("removed artifact", rec["removed"]))
    return found
