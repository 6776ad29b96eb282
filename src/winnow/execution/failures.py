"""Telling a batch's own failures from the cluster's (an actor or node lost)."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from winnow.execution.pools import short_cause
from winnow.records import BatchStatus

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


def fetch_result(ref: Any) -> dict[str, Any]:
    """A stage task's result record; Ray's errors become FAILED records."""
    try:
        result: dict[str, Any] = ray.get(ref)
        return result
    except RayTaskError as exc:  # the input (a source read) failed
        cause = exc.cause if exc.cause is not None else exc
        return {
            "status": BatchStatus.FAILED,
            "error": {
                "type": type(cause).__name__,
                "message": str(cause)[:2000],
                "traceback": str(exc)[-8000:],
            },
        }
    except RayActorError as exc:
        return {
            "status": BatchStatus.FAILED,
            "error": {"type": "WorkerDied", "message": short_cause(exc), "traceback": ""},
        }
    except RayError as exc:
        return {
            "status": BatchStatus.FAILED,
            "error": {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": ""},
        }
