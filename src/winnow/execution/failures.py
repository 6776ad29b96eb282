"""Telling a batch's own failures from the cluster's (an actor or node lost)."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from winnow.execution.pools import short_cause
from winnow.records import BatchStatus, ErrorRecord, StageResult

# Failures of the cluster rather than of the batch (a type name, or the cause
# a stage task's input carried from a lost reader).
INFRA_ERRORS = frozenset(
    {
        "WorkerDied",
        "ActorDiedError",
        "ActorUnavailableError",
        "ObjectLostError",
        "OwnerDiedError",
        "ObjectReconstructionFailedError",
        "ObjectReconstructionFailedMaxAttemptsExceededError",
        "ObjectReconstructionFailedLineageEvictedError",
        "ObjectFetchTimedOutError",
        "NodeDiedError",
        "RaySystemError",
    }
)
MAX_INFRA_RETRIES = 8


def fetch_result(ref: Any) -> StageResult:
    """A stage task's result record; Ray's errors become FAILED records."""
    try:
        result: StageResult = ray.get(ref)
        return result
    except RayTaskError as exc:  # the input (a source read) failed
        cause = exc.cause if exc.cause is not None else exc
        error = ErrorRecord.clipped(type(cause).__name__, str(cause), str(exc))
    except RayActorError as exc:
        error = ErrorRecord("WorkerDied", short_cause(exc), "")
    except RayError as exc:
        error = ErrorRecord.clipped(type(exc).__name__, str(exc), "")
    return StageResult(BatchStatus.FAILED, error=error)
