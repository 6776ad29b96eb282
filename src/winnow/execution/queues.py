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
from typing import Any, Protocol

from winnow.execution.flight import Flight
from winnow.plan import BatchPlan
from winnow.records import StageResult


@dataclass
class Task:
    """A stage task sent to run.

    Attributes:
        flight: its batch.
        actor: the index of its actor in the stage's pool (0 in-process).
        output: an object ref of the output batch on Ray, the batch itself
            in-process.
    """

    flight: Flight
    actor: int
    output: Any


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
