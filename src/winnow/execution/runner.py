"""The driver loop: stream batches through the stages with bounded work.

The same loop runs both executors: the driver holds only keys, small records
and (on Ray) object refs; a batch's checkpoint is written (buffered into a
segment) only after its stage has published and verified the artifact.

The loop's parts each have a home: a scheduler (``queues.Queues``: on Ray
``schedule.Scheduler`` with its actors, in-process
``local_executor.InProcessScheduler``) admits batches, sends them to run and
collects their results; ``commit`` commits each result and routes its batch
(asking ``retry`` whether a failure is tried again).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from winnow.accounting import Tally, row_counts
from winnow.execution.commit import Committer, Event
from winnow.execution.flight import Flight
from winnow.execution.outcome import Outcome, Progress, count_skips
from winnow.execution.queues import Queues, Task
from winnow.execution.retry import RetryPolicy
from winnow.execution.stalls import StallPolicy, Watchdog
from winnow.plan import SKIP, Plan
from winnow.records import BatchStatus, StageResult
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.state import State

FLUSH_EVERY_S = 2.0  # how often buffered checkpoints and events are written
WAIT_S = 0.1  # how long one turn of the loop waits for results

# Builds a run's scheduler from its batches with work and where events go.
SchedulerFactory = Callable[[list[Flight], Callable[[Event], None]], Queues]


class Runner:
    """Runs one plan's work and returns its outcome.

    Args:
        plan: what to run (batches whose every stage is skipped never enter).
        state: where checkpoints and events go.
        artifacts: where stages write artifacts.
        job_id: the job this run is.
        scheduler: builds the executor's scheduler for the batches with work.
        progress: what to tell a display.
        stop: set to stop sending work (an interrupt, the gateway stopping);
            the batches running commit first.
    """

    def __init__(
        self,
        plan: Plan,
        state: State,
        artifacts: ArtifactStore,
        job_id: str,
        scheduler: SchedulerFactory,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self.names = [s.name for s in plan.specs]
        self.state = state
        self.job_id = job_id
        self.progress = progress or Progress()
        self.stop = stop or threading.Event()
        self.checkpoints: CheckpointStore = state.checkpoints(
            job_id, plan.profile.checkpoint_flush_every
        )
        self.events: list[dict[str, Any]] = []  # written with the next flush
        self.tally = Tally(self.names)
        self.committer = Committer(
            plan,
            job_id,
            self.checkpoints,
            artifacts.root_url,
            RetryPolicy.of(plan.profile),
            self.progress,
            self.stop,
            self.events.append,
        )
        flights = [
            Flight(order, bp)
            for order, bp in enumerate(plan.batches)
            if bp.first_run < len(self.names)
        ]
        self.scheduler = scheduler(flights, self.events.append)
        self.watchdog = Watchdog(
            StallPolicy.of(plan.profile),
            self.names,
            job_id,
            self.events.append,
            self.progress,
            self.committer.counts,
        )
        self.scheduler.watchdog = self.watchdog
        self._unfinished = {f.order: f for f in flights}  # not yet in the row accounting
        self._last_flush = time.monotonic()

    def run(self) -> Outcome:
        """Run every batch with work, flushing checkpoints and events; return the outcome.

        Whatever ends the loop (done, stopped, an exception), the buffered
        checkpoints are flushed, the scheduler is stopped (its actors kept for the
        next job only when the run was not aborted or stopped) and every batch still
        in flight is counted in the row accounting.
        """
        done = count_skips(self.plan, self.committer.counts, self.committer.finals, self.tally)
        self.progress.start({n: len(self.plan.batches) for n in self.names}, done)
        work = bool(self._unfinished)
        try:
            if work:
                self.scheduler.start()
                self._loop()
        finally:
            self._flush(force=True)
            self.progress.stop()
            self.scheduler.stop(keep=not self.committer.abort and not self.stop.is_set())
            if work:
                self._compact()
            for flight in list(self._unfinished.values()):  # interrupted or abandoned
                self._account(flight)
        return self.committer.outcome(self.tally)

    def _loop(self) -> None:
        scheduler = self.scheduler
        scheduler.open()
        while True:
            stopping = self.stop.is_set() or self.committer.abort
            if not stopping:
                scheduler.step()
            if not scheduler.busy():  # a stale straggler's late result is not waited for
                if stopping or scheduler.drained():
                    break
                scheduler.pause()
                continue
            for task, result in scheduler.collect(WAIT_S):
                self._settle(task, result)
            for task, result in self.watchdog.tick(scheduler, stopping):
                self._settle(task, result)
            self._flush()

    def _settle(self, task: Task, result: StageResult) -> None:
        """Commit one stage result and send its batch where the committer routes it.

        Of two attempts at one batch (a straggler and its speculative twin) the
        first result in is committed; a stage failure is not while the other may
        still succeed (a store that refused a write or failed verification is:
        it stops the job), and a result that comes in after its batch moved on
        is dropped, so a batch is committed and counted once.
        """
        if self.scheduler.stale(task):
            self.watchdog.observe(task, result, "discarded")
            self.watchdog.discarded(self.scheduler, task, result, "the other attempt")
            return
        twins = self.scheduler.twins(task)
        if twins and result.status == BatchStatus.FAILED:
            self.watchdog.observe(task, result, "failed")
            self.watchdog.discarded(self.scheduler, task, result, "pending")
            return
        self.watchdog.observe(task, result, "committed")
        flight = task.flight
        flight.epoch += 1
        for twin in twins:  # it lost: a straggler still running is abandoned
            if twin.flagged and self.scheduler.abandon(twin):
                self.watchdog.unflag(twin, "lost to its speculative twin")
        route = self.committer.commit(flight, result, task.output)
        if route.stage is None:
            self.scheduler.leave(flight)
            self._account(flight)
        elif route.retry_in is not None:
            self.scheduler.retry_later(flight, route.retry_in)
        else:
            self.scheduler.enqueue(flight)

    def _account(self, flight: Flight) -> None:
        """Add a batch that left the pipeline (or never will) to the row accounting."""
        bp = flight.plan
        rows = [
            row_counts(bp.prior[i]) if action == SKIP else flight.rows.get(i)
            for i, action in enumerate(bp.actions)
        ]
        self.tally.add_batch(bp.source.file.url, bp.source.start, bp.source.stop, rows)
        self._unfinished.pop(flight.order, None)

    def _compact(self) -> None:
        """Merge each stage's segments once they pile up, so skip decisions stay cheap."""
        for name in self.names:
            # An optimisation only: when it fails the segments stay valid as they are.
            with contextlib.suppress(OSError):
                self.checkpoints.compact(name)

    def _flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_flush < FLUSH_EVERY_S:
            return
        self._last_flush = time.monotonic()
        self.checkpoints.flush()
        events = list(self.events)
        self.events.clear()  # in place: the committer and scheduler append to this list
        self.state.append_events(events)
