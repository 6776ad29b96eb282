"""The retry, backoff and poison policy for a batch whose stage failed."""

from __future__ import annotations

import random
from collections.abc import Callable

from winnow.execution.failures import INFRA_ERRORS, MAX_INFRA_RETRIES
from winnow.execution.flight import Flight
from winnow.profile import Profile

MAX_BACKOFF_S = 30.0
MIN_INFRA_BACKOFF_S = 0.5  # long enough for Ray to notice a lost actor and restart it


class RetryPolicy:
    """Whether a failed batch is tried again at its stage, and after how long.

    A batch's own failure (its stage raised, its input could not be read)
    counts against ``max_attempts`` tries in all. A lost actor or node is not
    the batch's fault: it counts against a budget of its own
    (``MAX_INFRA_RETRIES``), with a backoff of at least
    ``MIN_INFRA_BACKOFF_S``. The backoff doubles with each try from
    ``backoff_s``, is capped at ``MAX_BACKOFF_S`` and jittered by x0.5 to
    x1.5. A batch whose budget is spent is poisoned: it fails alone and the
    rest of the job goes on.
    """

    def __init__(
        self,
        max_attempts: int,
        backoff_s: float,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.jitter = jitter

    @classmethod
    def of(cls, profile: Profile) -> RetryPolicy:
        """The policy a profile sets: its ``max_attempts`` and ``retry_backoff_s``."""
        return cls(profile.max_attempts, profile.retry_backoff_s)

    def retry_delay(
        self, flight: Flight, error_type: str, attempt: int, stopping: bool
    ) -> float | None:
        """Charge one failure to the batch; return the backoff before its next try.

        None when it is not tried again: its budget is spent, or the job stops.

        Args:
            flight: the batch; a cluster failure is counted on it (``infra``).
            error_type: the failure's type name.
            attempt: the attempt that failed, counting those of earlier runs.
            stopping: the job is stopping: nothing is retried.
        """
        infra = error_type in INFRA_ERRORS
        flight.infra += infra
        own = attempt - flight.infra  # the batch's own failures so far
        may_retry = flight.infra <= MAX_INFRA_RETRIES if infra else own < self.max_attempts
        if not may_retry or stopping:
            return None
        tries = flight.infra if infra else own
        base = max(self.backoff_s, MIN_INFRA_BACKOFF_S) if infra else self.backoff_s
        return min(MAX_BACKOFF_S, base * 2.0 ** (tries - 1)) * (0.5 + self.jitter())
