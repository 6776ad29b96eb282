"""Where each batch of a run is, the part of scheduling both executors share.

A batch is admitted (at most ``max_in_flight`` at once), queued for its
stage, and sent to run there. When its result is in, the committer routes it:
on to a later stage's queue, back to the same stage after a retry backoff, or
out of the pipeline. How a queued batch is sent and its result collected is
the executor's: Ray actors (``schedule.Scheduler``) or this process
(``local_executor.InProcessScheduler``).
"""

from __future__ import annotations

import heapq
import itertools
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from winnow.execution.flight import Flight
from winnow.plan import BatchPlan
from winnow.records import StageResult

if TYPE_CHECKING:  # stalls imports this module
    from winnow.execution.stalls import Watchdog


@dataclass
class Task:
    """A stage task sent to run.

    Attributes:
        flight: its batch.
        actor: the index of its actor in the stage's pool (0 in-process).
        output: an object ref of the output batch on Ray, the batch itself
            in-process.
        stage: the stage it runs (the batch's stage when it was sent).
        epoch: the batch's epoch when it was sent (``Flight.epoch``).
        started: when it started running (monotonic): when it was sent to an
            idle actor, or when the task before it on its actor ended; None
            while it waits behind another task.
        flagged: it was flagged as a straggler.
        twin: a speculative second attempt of a straggler.
        speculated: a twin of this task was sent (a straggler gets one).
    """

    flight: Flight
    actor: int
    output: Any
    stage: int = 0
    epoch: int = 0
    started: float | None = None
    flagged: bool = False
    twin: bool = False
    speculated: bool = False


class Inputs(Protocol):
    """How a batch that starts from the source reaches the first stage."""

    def open(self, batches: Iterable[BatchPlan]) -> None:
        """Open a read stream per file for the batches read by stream."""

    def first(self, bp: BatchPlan) -> tuple[Any, Any, int | None]:
        """(source meta, batch, reader index) for the batch's first read."""

    def again(self, bp: BatchPlan) -> tuple[Any, Any, int | None]:
        """Like ``first``, for a retry: the one range read on its own."""


class Queues(ABC):
    """The batches of one run that are not done yet, and their stage tasks.

    Attributes:
        todo: batches not admitted yet, in plan order.
        queues: per stage index, batches waiting to be sent.
        waiting: a heap of (when, tie, batch): retries waiting out a backoff.
        outstanding: the stage tasks sent and not collected yet, by a key of
            the executor's (on Ray, their result's object ref).
        in_flight: batches admitted that have not left the pipeline.
    """

    def __init__(self, flights: Iterable[Flight], names: list[str], max_in_flight: int) -> None:
        self.todo: deque[Flight] = deque(flights)
        self.queues: dict[int, deque[Flight]] = {i: deque() for i in range(len(names))}
        self.waiting: list[tuple[float, int, Flight]] = []
        self.outstanding: dict[Any, Task] = {}
        self.in_flight = 0
        self.names = names
        self.max_in_flight = max_in_flight
        self._tie = itertools.count()
        self.watchdog: Watchdog | None = None  # the run's, set by the runner
        # per (stage, actor), its tasks in the order sent: an actor runs them in that order
        self._lanes: dict[tuple[int, int], deque[Task]] = {}

    # -- what the executor provides -----------------------------------------
    @abstractmethod
    def start(self) -> None:
        """Start what runs the stages (before the first batch is admitted)."""

    @abstractmethod
    def stop(self, keep: bool) -> None:
        """Stop what runs the stages; ``keep`` it for the next job where it can be."""

    @abstractmethod
    def inputs(self) -> Inputs:
        """How source batches reach the first stage."""

    @abstractmethod
    def dispatch(self) -> None:
        """Send queued batches to run."""

    @abstractmethod
    def collect(self, timeout: float) -> Iterator[tuple[Task, StageResult]]:
        """Each stage task that finished within ``timeout``, with its result."""

    def speculate(self, task: Task) -> bool:
        """Send a straggling task's batch to an idle actor of its stage too; False if none.

        The executor's to provide; this process has no second worker.
        """
        return False

    def alone(self, task: Task) -> bool:
        """Whether nothing else can ever run ``task``'s batch: no other actor, no room for one.

        The executor's to say; this process has no second worker, but cannot
        abandon a task either.
        """
        return False

    def abandon(self, task: Task) -> bool:
        """Give up a stalled task: stop waiting for it and free what runs it; False if it cannot.

        The executor's to provide; a thread in this process cannot be killed.
        """
        return False

    def actor_label(self, task: Task) -> str:
        """What ran ``task``, for messages."""
        return "the driver process (local executor)"

    # -- tasks sent --------------------------------------------------------
    def track(self, key: Any, task: Task) -> None:
        """Note a task sent to an actor (its batch's stage and epoch, and its start if idle)."""
        task.stage, task.epoch = task.flight.stage, task.flight.epoch
        lane = self._lanes.setdefault((task.stage, task.actor), deque())
        if not lane:
            task.started = time.monotonic()
        lane.append(task)
        self.outstanding[key] = task

    def untrack(self, key: Any) -> Task:
        """Forget a task whose result is in (or that was abandoned); the next on its actor starts."""
        task = self.outstanding.pop(key)
        lane = self._lanes.get((task.stage, task.actor))
        if lane and task in lane:
            head = lane[0] is task
            lane.remove(task)
            if head and lane:
                lane[0].started = time.monotonic()
        return task

    def lane(self, task: Task) -> list[Task]:
        """The tasks on ``task``'s actor, in the order they run."""
        return list(self._lanes.get((task.stage, task.actor), ()))

    def holds(self, task: Task) -> bool:
        """Whether ``task`` is still outstanding."""
        return any(t is task for t in self.outstanding.values())

    def key_of(self, task: Task) -> Any:
        """The key ``task`` is outstanding under."""
        return next(k for k, t in self.outstanding.items() if t is task)

    def stale(self, task: Task) -> bool:
        """Whether the task's batch had a result committed since it was sent."""
        return task.epoch != task.flight.epoch

    def twins(self, task: Task) -> list[Task]:
        """The other outstanding attempts at the same batch, stage and epoch."""
        return [
            t
            for t in self.outstanding.values()
            if t is not task and t.flight is task.flight and t.epoch == task.epoch
        ]

    def busy(self) -> bool:
        """Whether any task still counts: one whose batch awaits its result (not a stale one)."""
        return any(not self.stale(t) for t in self.outstanding.values())

    def stuck_actors(self, stage: int) -> set[int]:
        """The actors of ``stage`` whose running task is a flagged straggler."""
        return {
            a for (i, a), lane in self._lanes.items() if i == stage and lane and lane[0].flagged
        }

    # -- what is left ------------------------------------------------------
    def drained(self) -> bool:
        """Nothing left to send: no batch to admit, to retry or queued."""
        return not self.todo and not self.waiting and not self._queued()

    def lowest_stage(self) -> int:
        """The earliest stage any unfinished batch will still run (the stage count if none)."""
        return min(
            [
                *(f.plan.first_run for f in self.todo),
                *(f.stage for _, _, f in self.waiting),
                *(i for i, q in self.queues.items() if q),
                *(t.flight.stage for t in self.outstanding.values()),
            ],
            default=len(self.names),
        )

    def _queued(self) -> bool:
        return any(self.queues.values())

    # -- sending work ------------------------------------------------------
    def open(self) -> None:
        """Open the source streams of every batch that starts by reading one."""
        self.inputs().open(f.plan for f in self.todo)

    def step(self) -> None:
        """Admit new batches, release retries whose backoff is over, send queued ones."""
        while self.todo and self.in_flight < self.max_in_flight:
            flight = self.todo.popleft()
            self.in_flight += 1
            self._enter(flight)
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            _, _, flight = heapq.heappop(self.waiting)
            self._enter_again(flight)
        self.dispatch()

    def pause(self) -> None:
        """Nothing running: sleep until a retry is due or an actor may be back."""
        if self.waiting and not self._queued():
            time.sleep(max(0.0, min(0.2, self.waiting[0][0] - time.monotonic())))
        elif self._queued():
            time.sleep(0.05)  # work queued for actors that are being restarted

    def _enter(self, flight: Flight) -> None:
        """Queue a batch for its first stage to run.

        Its input is read from the source, or from the artifact committed by
        the stage before it.
        """
        first = flight.plan.first_run
        flight.stage = first
        if first == 0 and flight.plan.shards is not None:  # a reduce partition
            flight.data = {"shards": flight.plan.shards}
        elif first == 0:
            flight.meta, flight.data, flight.reader = self.inputs().first(flight.plan)
        else:
            flight.input_artifact = flight.plan.prior[first - 1]["artifact"]  # type: ignore[index]
            flight.data = {"artifact": flight.input_artifact}
        self.queues[first].append(flight)

    def _enter_again(self, flight: Flight) -> None:
        """A retry: its input is read again (an object ref may have died with its node)."""
        if flight.stage > 0 and flight.input_artifact is not None:
            flight.data = {"artifact": flight.input_artifact}
        elif flight.stage == 0 and flight.plan.shards is not None:
            flight.data = {"shards": flight.plan.shards}
        elif flight.stage == 0:
            flight.meta, flight.data, flight.reader = self.inputs().again(flight.plan)
        self.queues[flight.stage].append(flight)

    # -- routing -----------------------------------------------------------
    def enqueue(self, flight: Flight) -> None:
        """Queue a batch for its (next) stage, ``flight.stage``."""
        self.queues[flight.stage].append(flight)

    def retry_later(self, flight: Flight, delay: float) -> None:
        """Queue a batch for the same stage again once ``delay`` seconds have passed."""
        heapq.heappush(self.waiting, (time.monotonic() + delay, next(self._tie), flight))

    def leave(self, flight: Flight) -> None:
        """A batch left the pipeline: one more may be admitted."""
        self.in_flight -= 1
