"""Committing a stage result, counting it, and routing its batch on.

A result that succeeded is committed as a SUCCEEDED checkpoint (its artifact
was published and verified by the actor) and its batch moves to the next
stage that runs it. A failure is committed as a FAILED checkpoint with its
error; then a store that refused a write (STORAGE) or an artifact that failed
verification (INTEGRITY) stops the job, and any other failure is retried or
poisoned as the retry policy says.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winnow.accounting import Tally, row_counts
from winnow.execution.flight import Flight
from winnow.execution.outcome import Outcome, Progress, StageCounts
from winnow.execution.retry import RetryPolicy
from winnow.plan import RETRY, SKIP, BatchPlan, Plan, StagePlan
from winnow.records import (
    MEASUREMENTS,
    BatchStatus,
    CheckpointRecord,
    ErrorRecord,
    SourceRows,
    StageResult,
    summary,
)
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.state import event

Event = dict[str, Any]


@dataclass(frozen=True)
class Route:
    """Where a batch goes once its stage result is committed.

    Attributes:
        stage: the stage it is queued for next (the same one for a retry);
            None when it left the pipeline (finished, poisoned, or the job stops).
        retry_in: for a retry, the backoff in seconds before it runs again.
    """

    stage: int | None
    retry_in: float | None = None


LEFT = Route(None)


def checkpoint_record(
    stage: StagePlan, i: int, bp: BatchPlan, attempt: int, job_id: str, result: StageResult
) -> CheckpointRecord:
    """The checkpoint record of stage ``i`` for batch ``bp`` from its stage result.

    A result that did not succeed (FAILED, INTEGRITY, STORAGE) is committed
    as FAILED with its error. The record names the fingerprint and version
    the batch was computed under, so ``winnow invalidate --version`` can
    select what one stage version made.
    """
    ok = result.status == BatchStatus.SUCCEEDED
    meta = result.source_meta
    src = bp.source
    return CheckpointRecord(
        stage=stage.name,
        fingerprint=stage.fingerprint,
        stage_version=stage.parts.get("version"),
        key=bp.keys[i],
        input_key=bp.keys[i - 1] if i else src.key,
        batch=src.key,
        source=SourceRows(src.file.url, src.start, src.stop),
        attempt=attempt,
        job_id=job_id,
        status=BatchStatus.SUCCEEDED if ok else BatchStatus.FAILED,
        **{name: getattr(result, name) for name in MEASUREMENTS},
        source_rows=meta.rows if meta else None,
        bad_records=meta.bad if meta else None,
        blank_lines=(meta.blank or None) if meta else None,
        quarantine=(meta.quarantine or None) if meta else None,
        artifact=result.artifact if ok else None,
        shards=result.shards if ok else None,
        removed=result.removed if ok else None,
        error=None if ok else result.failure,
    )


class Committer:
    """Commits each stage result and keeps what the run's outcome reports.

    Attributes:
        counts: per stage, batches run, skipped, retried and failed, rows and bytes.
        finals: per batch (plan order), the last stage's checkpoint once it has one
            (its ``records.SUMMARY_FIELDS``).
        errors: per error type, its count, an example and the stages it hit.
        poisoned: batches that failed for good (their retries spent).
        integrity: artifacts that failed verification.
        storage_failure: why the job stopped when a store refused writes.
        abort: the job stops: no new work is sent.
    """

    def __init__(
        self,
        plan: Plan,
        job_id: str,
        checkpoints: CheckpointStore,
        store_url: str,
        policy: RetryPolicy,
        progress: Progress,
        stop: threading.Event,
        emit: Callable[[Event], None],
    ) -> None:
        self.plan = plan
        self.names = [s.name for s in plan.specs]
        self.job_id = job_id
        self.checkpoints = checkpoints
        self.store_url = store_url
        self.policy = policy
        self.progress = progress
        self.stop = stop
        self.emit = emit
        self.counts = {n: StageCounts() for n in self.names}
        self.finals: list[dict[str, Any] | None] = [None] * len(plan.batches)
        self.errors: dict[str, dict[str, Any]] = {}
        self.poisoned: list[dict[str, Any]] = []
        self.integrity: list[dict[str, Any]] = []
        self.storage_failure: str | None = None
        self.abort = False

    def outcome(self, tally: Tally) -> Outcome:
        """What the run produced so far, with ``tally`` as its row accounting."""
        return Outcome(
            self.counts,
            self.finals,
            self.poisoned,
            self.integrity,
            self.stop.is_set(),
            self.errors,
            self.storage_failure,
            tally,
        )

    def commit(self, flight: Flight, result: StageResult, output: Any) -> Route:
        """Commit the result of the batch's current stage; return where it goes next.

        ``output`` is the object ref of the stage's output batch (what the
        next stage reads).
        """
        i = flight.stage
        bp = flight.plan
        prior = bp.prior[i]
        previous = int(prior.get("attempt", 0)) if prior and bp.actions[i] == RETRY else 0
        flight.attempts[i] = flight.attempts.get(i, previous) + 1
        record = checkpoint_record(
            self.plan.stages[i], i, bp, flight.attempts[i], self.job_id, result
        )
        self.counts[self.names[i]].bad_records += record.bad_records or 0
        if result.status == BatchStatus.SUCCEEDED:
            return self._succeeded(flight, result, record, output)
        return self._failed(flight, result, record)

    # -- success -----------------------------------------------------------
    def _succeeded(
        self, flight: Flight, result: StageResult, record: CheckpointRecord, output: Any
    ) -> Route:
        i = flight.stage
        name = self.names[i]
        artifact = result.artifact
        assert artifact is not None  # a SUCCEEDED result carries its artifact
        written = self.checkpoints.append(record)
        flight.rows[i] = row_counts(written)
        self.emit(
            event(
                "checkpoint",
                self.job_id,
                stage=name,
                key=record.key,
                status=BatchStatus.SUCCEEDED,
                attempt=record.attempt,
                digest=artifact["digest"],
            )
        )
        counts = self.counts[name]
        counts.run += 1
        counts.rows_in += result.rows_in or 0
        counts.rows_out += result.rows_out or 0
        counts.bytes_out += artifact["bytes"]
        counts.busy_s += result.duration_s or 0.0
        self.progress.advance(name, result.rows_in or 0)
        return self._route(flight, written, output)

    def _route(self, flight: Flight, written: dict[str, Any], output: Any) -> Route:
        """Move a committed batch to the next stage that runs it, or out of the pipeline."""
        i = flight.stage
        bp = flight.plan
        nxt = i + 1
        while nxt < len(self.names) and bp.actions[nxt] == SKIP:
            nxt += 1
        if nxt >= len(self.names):
            # What the manifest and a reduce side read, not the whole record: a run of
            # 100,000 batches holds one per batch.
            self.finals[flight.order] = summary(written) if nxt == i + 1 else bp.prior[-1]
            return LEFT
        flight.stage = nxt
        if nxt == i + 1:
            flight.input_artifact = written["artifact"]
            flight.data = output
        else:  # the stages between are skipped: read what the one before committed
            flight.input_artifact = bp.prior[nxt - 1]["artifact"]  # type: ignore[index]
            flight.data = {"artifact": flight.input_artifact}
        flight.meta = None
        return Route(nxt)

    # -- failure -----------------------------------------------------------
    def _failed(self, flight: Flight, result: StageResult, record: CheckpointRecord) -> Route:
        name = self.names[flight.stage]
        error = result.failure
        self.checkpoints.append(record)
        self._group(error, name)
        if result.status == BatchStatus.STORAGE:
            self.counts[name].failed += 1
            if self.storage_failure is None:
                self.storage_failure = (
                    f"the artifact store {self.store_url} refused a write "
                    f"(stage {name}): {error.message}. Free space (or fix the store) and "
                    "rerun the same command: committed batches stay committed"
                )
            self.abort = True
            return LEFT
        if result.status == BatchStatus.INTEGRITY:
            self.counts[name].failed += 1
            self.integrity.append({"stage": name, "key": record.key, "message": error.message})
            self.emit(
                event("integrity", self.job_id, stage=name, key=record.key, message=error.message)
            )
            self.abort = True  # fail fast: an integrity failure means storage is not trustworthy
            return LEFT
        delay = self.policy.retry_delay(flight, error.type, record.attempt, self.stop.is_set())
        if delay is not None:
            self._retrying(record, error, delay)
            return Route(flight.stage, retry_in=delay)
        self._poisoned(record, error)
        return LEFT

    def _group(self, error: ErrorRecord, stage: str) -> None:
        """Count an error under its type, keeping the first as the example."""
        group = self.errors.setdefault(
            error.type, {"count": 0, "example": error.to_dict(), "stages": []}
        )
        group["count"] += 1
        if stage not in group["stages"]:
            group["stages"].append(stage)

    def _retrying(self, record: CheckpointRecord, error: ErrorRecord, delay: float) -> None:
        self.counts[record.stage].retried += 1
        self.emit(
            event(
                "retry",
                self.job_id,
                stage=record.stage,
                key=record.key,
                attempt=record.attempt,
                error=error.type,
                delay_s=round(delay, 3),
            )
        )

    def _poisoned(self, record: CheckpointRecord, error: ErrorRecord) -> None:
        """The batch failed for good: it is listed, and the rest of the job goes on."""
        self.counts[record.stage].failed += 1
        self.poisoned.append(
            {
                "stage": record.stage,
                "key": record.key,
                "attempts": record.attempt,
                "error_type": error.type,
                "message": error.message,
                "source": record.source.to_dict(),
            }
        )
        self.emit(
            event(
                "batch_failed",
                self.job_id,
                stage=record.stage,
                key=record.key,
                attempts=record.attempt,
                error=error.type,
            )
        )
