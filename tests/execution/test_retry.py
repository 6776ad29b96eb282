"""The retry, backoff and poison policy (no Ray: it is plain arithmetic on a batch)."""

from __future__ import annotations

import pytest

from winnow.execution.failures import MAX_INFRA_RETRIES
from winnow.execution.flight import Flight
from winnow.execution.retry import MAX_BACKOFF_S, MIN_INFRA_BACKOFF_S, RetryPolicy


def flight() -> Flight:
    return Flight(0, plan=None)  # type: ignore[arg-type]  # the policy reads no plan


def test_a_batch_s_own_failures_get_max_attempts_tries_with_doubling_backoff():
    policy = RetryPolicy(max_attempts=3, backoff_s=1.0, jitter=lambda: 0.5)  # x1.0
    f = flight()
    assert policy.retry_delay(f, "ValueError", attempt=1, stopping=False) == 1.0
    assert policy.retry_delay(f, "ValueError", attempt=2, stopping=False) == 2.0
    assert policy.retry_delay(f, "ValueError", attempt=3, stopping=False) is None  # poisoned
    assert f.infra == 0


def test_attempts_of_earlier_runs_count_and_the_backoff_is_capped_and_jittered():
    f = flight()
    assert RetryPolicy(3, 1.0, jitter=lambda: 0.0).retry_delay(f, "E", 3, False) is None
    big = RetryPolicy(max_attempts=50, backoff_s=10.0, jitter=lambda: 0.0)
    assert big.retry_delay(f, "E", attempt=10, stopping=False) == MAX_BACKOFF_S * 0.5
    jittered = RetryPolicy(max_attempts=5, backoff_s=1.0, jitter=lambda: 0.999)
    assert jittered.retry_delay(flight(), "E", 1, False) == pytest.approx(1.499)


def test_a_lost_worker_has_its_own_budget_and_a_minimum_backoff():
    policy = RetryPolicy(max_attempts=1, backoff_s=0.0, jitter=lambda: 0.5)
    f = flight()
    # The batch's one own try is not spent by the cluster losing its worker.
    for attempt in range(1, MAX_INFRA_RETRIES + 1):
        delay = policy.retry_delay(f, "WorkerDied", attempt, stopping=False)
        assert delay == min(MAX_BACKOFF_S, MIN_INFRA_BACKOFF_S * 2 ** (attempt - 1))
    assert f.infra == MAX_INFRA_RETRIES
    assert policy.retry_delay(f, "WorkerDied", MAX_INFRA_RETRIES + 1, False) is None
    # ...while its own failure after those is its first, and its last with max_attempts=1.
    g = flight()
    assert policy.retry_delay(g, "NodeDiedError", 1, False) is not None
    assert policy.retry_delay(g, "ValueError", 2, False) is None


def test_nothing_is_retried_while_the_job_stops():
    f = flight()
    assert RetryPolicy(3, 1.0).retry_delay(f, "WorkerDied", 1, stopping=True) is None
    assert f.infra == 1  # the failure is still counted
