"""No silent stalls: stragglers flagged, re-run speculatively, or abandoned past a timeout.

The driver loop asks the :class:`Watchdog` after every turn which running
stage task has run far past its stage's normal latency:

* past ``max(straggler_min_s, straggler_factor x its expected latency)``
  (the stage's median latency per row so far times the batch's rows, so a
  large partition of a skewed grouping stage is not taken for a hung one) it
  is **flagged**: a ``straggler`` event goes to the
  journal (``winnow status`` lists it while the job runs) and the progress
  display counts it; its actor gets no new work while it straggles;
* a flagged task is **speculated** (``speculate``, on by default) when an
  actor of its stage is idle and the stage has nothing queued: the batch runs
  a second time there. When no other actor of its stage can ever take it (a
  pool of one, or every other one straggles too), the Ray scheduler starts one
  spare actor for the stage, if the cluster has room for it now: the batches
  queued behind the straggler, then its twin, run there. Artifacts are content-addressed, so both attempts of
  a deterministic stage write the same bytes under the same name; the first
  result in is committed (one checkpoint), the other is discarded when it
  arrives (``speculation_discarded``, with whether its digest matched) and
  never reaches the row accounting. When the twin wins, the straggler's actor
  is killed and restarted, so a hung actor does not keep its resources;
* past ``stall_timeout_s`` (off by default) a task is **abandoned**: its
  actor is killed (and restarted) and the batch fails with a ``Stalled``
  error naming stage, batch and actor, so the retry policy runs it again on
  another actor, or, its ``max_attempts`` spent, the job fails listing it.
  Without ``stall_timeout_s`` (and with ``speculate``), a flagged task that
  nothing else can run (no other actor, no room for a spare) is abandoned the same way past
  ``ALONE_FACTOR`` times its flag threshold: the default never hangs a job
  for good.

Which of these an executor can do is its own: the Ray scheduler kills and
restarts actors; the local executor runs one task at a time in the driver
thread, which cannot be killed and has no second worker: there a timer only
flags the straggler (display, stderr, journal), and a stuck local run is for
Ctrl-C, pdb or py-spy.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winnow.execution.outcome import Progress, StageCounts
from winnow.execution.queues import Queues, Task
from winnow.profile import Profile
from winnow.records import BatchStatus, ErrorRecord, StageResult
from winnow.storage.state import event

STALLED = "Stalled"  # the error type of an abandoned task
LATENCY_WINDOW = 256  # the recent batch latencies per stage a median is taken over
ALONE_FACTOR = 10.0  # no stall_timeout_s: abandon a task nothing else can run past 10x its flag


@dataclass(frozen=True)
class StallPolicy:
    """When a running batch is flagged, re-run speculatively or abandoned (a profile's keys).

    Attributes:
        factor: flag a batch running this many times its stage's median latency.
        min_s: never flag a batch before it has run this long.
        timeout_s: abandon a batch running this long (None: never).
        speculate: re-run a flagged batch on an idle actor of its stage.
    """

    factor: float = 5.0
    min_s: float = 10.0
    timeout_s: float | None = None
    speculate: bool = True

    @classmethod
    def of(cls, profile: Profile) -> StallPolicy:
        """The policy a profile sets."""
        return cls(
            profile.straggler_factor,
            profile.straggler_min_s,
            profile.stall_timeout_s,
            profile.speculate,
        )

    def threshold(self, median: float | None) -> float:
        """How long a batch may run before it is flagged, given its stage's median latency."""
        return max(self.min_s, self.factor * median) if median is not None else self.min_s


class Watchdog:
    """Flags, speculates and abandons stragglers of one run.

    Args:
        policy: the thresholds.
        names: the stage names, in pipeline order.
        job_id: the job, for events.
        emit: where events go (written with the runner's next flush).
        progress: the display told how many batches of a stage straggle.
        counts: per stage name, the run's counts (straggled, speculated, abandoned).
    """

    def __init__(
        self,
        policy: StallPolicy,
        names: list[str],
        job_id: str,
        emit: Callable[[dict[str, Any]], None],
        progress: Progress,
        counts: dict[str, StageCounts],
    ) -> None:
        self.policy = policy
        self.counts = counts
        self.names = names
        self.job_id = job_id
        self.emit = emit
        self.progress = progress
        self.latencies: dict[int, deque[float]] = {}
        self.flagged: dict[int, int] = {}  # stage -> how many of its tasks straggle now

    def median(self, stage: int) -> float | None:
        """The stage's median latency per row so far (None before its first batch)."""
        seen = self.latencies.get(stage)
        return statistics.median(seen) if seen else None

    def expected(self, task: Task) -> float | None:
        """How long ``task`` should take: its stage's median per row times its rows.

        Batches of one size take about the median batch latency; a larger one
        (a skewed reduce partition, a file's short last batch) is given its share.
        """
        per_row = self.median(task.stage)
        return None if per_row is None else per_row * _rows(task)

    def tick(self, scheduler: Queues, stopping: bool) -> list[tuple[Task, StageResult]]:
        """Flag, speculate and abandon; return the abandoned tasks with their ``Stalled`` result."""
        now = time.monotonic()
        abandoned = []
        for task in list(scheduler.outstanding.values()):
            if task.started is None or scheduler.stale(task) or not scheduler.holds(task):
                continue  # waiting behind another, stale, or requeued by an abandon just now
            running = now - task.started
            late = running > self.policy.threshold(self.expected(task))
            if late and not task.flagged and not task.twin:  # a twin may stall, not be flagged
                self._flag(scheduler, task, running)
            if self._may_speculate(task, stopping) and scheduler.speculate(task):
                task.speculated = True
                self.counts[self.names[task.stage]].speculated += 1
                self._event("speculated", scheduler, task, twin=scheduler.twins(task)[0])
            timeout = self._timeout(scheduler, task)
            if timeout is not None and running > timeout and scheduler.abandon(task):
                abandoned.append((task, self._stalled(scheduler, task, running, timeout)))
        return abandoned

    def _timeout(self, scheduler: Queues, task: Task) -> float | None:
        """When ``task`` is abandoned: ``stall_timeout_s``, else only if nothing else can run it.

        A flagged task that no other actor, nor a spare, can ever run again
        (``scheduler.alone``) would hang the job for good: without a
        ``stall_timeout_s`` it is abandoned past ``ALONE_FACTOR`` times its
        flag threshold, which follows the stage's observed latency.
        """
        if self.policy.timeout_s is not None:
            return self.policy.timeout_s
        if task.flagged and scheduler.alone(task):
            return ALONE_FACTOR * self.policy.threshold(self.expected(task))
        return None

    def _may_speculate(self, task: Task, stopping: bool) -> bool:
        """A flagged task gets one twin (not another if that one fails), while the job goes on."""
        return task.flagged and not task.speculated and self.policy.speculate and not stopping

    def observe(self, task: Task, result: StageResult, outcome: str) -> None:
        """A task's result is in (``outcome``: committed, discarded...); learn its latency."""
        if result.status == BatchStatus.SUCCEEDED and result.duration_s is not None:
            seen = self.latencies.setdefault(task.stage, deque(maxlen=LATENCY_WINDOW))
            seen.append(result.duration_s / _rows(task))
        self.unflag(task, outcome)

    def unflag(self, task: Task, outcome: str) -> None:
        """A flagged task ended (``outcome``): say so, and count it out of the display."""
        if not task.flagged:
            return
        task.flagged = False
        name = self.names[task.stage]
        self.flagged[task.stage] -= 1
        self.progress.straggling(name, self.flagged[task.stage])
        self.emit(event("straggler_end", self.job_id, stage=name, key=_key(task), outcome=outcome))

    def discarded(self, scheduler: Queues, task: Task, result: StageResult, winner: str) -> None:
        """The late (or failed) result of one of two attempts at a batch was dropped."""
        digest = (result.artifact or {}).get("digest")
        self._event(
            "speculation_discarded",
            scheduler,
            task,
            status=str(result.status),
            error=result.error.type if result.error else None,
            digest=digest,
            winner=winner,
        )

    def watch_in_driver(self, scheduler: Queues, task: Task) -> threading.Timer:
        """Start a timer that flags ``task``, run in the driver thread, once it runs late.

        For the local executor, whose driver loop is blocked while a task runs:
        the flag reaches the display and stderr at once, the journal with the
        next flush. Cancel and join the timer when the task returns.
        """
        delay = self.policy.threshold(self.expected(task))
        timer = threading.Timer(delay, self._flag_in_driver, (scheduler, task, delay))
        timer.daemon = True
        timer.start()
        return timer

    def _flag_in_driver(self, scheduler: Queues, task: Task, running: float) -> None:
        self._flag(scheduler, task, running)
        print(
            f"note: stage {self.names[task.stage]!r}, batch {_key(task)[:16]}, has run "
            f"{running:.1f}s in this process (local executor), far past its stage's norm; "
            "nothing here can stop or re-run it: wait, or interrupt (Ctrl-C) and rerun, "
            "which skips every committed batch",
            file=sys.stderr,
        )

    def _flag(self, scheduler: Queues, task: Task, running: float) -> None:
        task.flagged = True
        self.counts[self.names[task.stage]].straggled += 1
        self.flagged[task.stage] = self.flagged.get(task.stage, 0) + 1
        self.progress.straggling(self.names[task.stage], self.flagged[task.stage])
        expected = self.expected(task)
        self._event(
            "straggler",
            scheduler,
            task,
            running_s=round(running, 3),
            threshold_s=round(self.policy.threshold(expected), 3),
            median_s=round(expected, 3) if expected is not None else None,
        )

    def _stalled(
        self, scheduler: Queues, task: Task, running: float, timeout: float
    ) -> StageResult:
        """The result an abandoned task is settled with: a ``Stalled`` error naming all three."""
        src = task.flight.plan.source
        past = (
            f"stall_timeout_s={timeout:g}"
            if self.policy.timeout_s is not None
            else f"{timeout:g}s ({ALONE_FACTOR:g}x its flag threshold: no other actor of its "
            "stage, and no room for a spare, could run it again; set stall_timeout_s to choose)"
        )
        message = (
            f"stage {self.names[task.stage]!r}, batch {_key(task)[:16]} ({src.file.url} rows "
            f"{src.start}-{src.stop}) on actor {scheduler.actor_label(task)} ran {running:.1f}s, "
            f"past {past}: the actor was killed (and restarted) and the "
            "batch is retried on another actor while max_attempts allows"
        )
        self.counts[self.names[task.stage]].abandoned += 1
        self._event("stall_abandoned", scheduler, task, running_s=round(running, 3))
        self.unflag(task, "abandoned")
        return StageResult(
            BatchStatus.FAILED,
            error=ErrorRecord(STALLED, message, ""),
            started_at=time.time() - running,
            duration_s=running,
        )

    def _event(self, kind: str, scheduler: Queues, task: Task, **fields: Any) -> None:
        twin = fields.pop("twin", None)
        if twin is not None:
            fields["twin_actor"] = scheduler.actor_label(twin)
        self.emit(
            event(
                kind,
                self.job_id,
                stage=self.names[task.stage],
                key=_key(task),
                actor=scheduler.actor_label(task),
                **fields,
            )
        )


def _key(task: Task) -> str:
    """The batch key of the task's stage."""
    return task.flight.plan.keys[task.stage]


def _rows(task: Task) -> int:
    """The rows of a task's batch (a reduce partition's: its shards' rows); at least 1."""
    source = task.flight.plan.source
    return max(source.stop - source.start, 1)
