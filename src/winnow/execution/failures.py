"""Telling a batch's own failures from the cluster's (an actor or node lost).

Names only, no Ray: the retry policy, which both executors share, reads them;
the Ray scheduler turns Ray's errors into records of these types.
"""

from __future__ import annotations

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
