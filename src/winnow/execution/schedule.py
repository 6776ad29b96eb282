"""Scheduling: where each batch of a run is, and which actor runs it next.

A batch is admitted (at most ``max_in_flight`` at once), queued for its
stage, and sent to the least-loaded live actor of that stage's pool. When its
result is in, the committer routes it: on to a later stage's queue, back to
the same stage after a retry backoff, or out of the pipeline.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from winnow.errors import StageFailed
from winnow.execution.failures import INFRA_ERRORS, fetch_result
from winnow.execution.flight import Flight
from winnow.execution.pools import READY_TIMEOUT_S, Pool
from winnow.execution.workers import Workers
from winnow.plan import SKIP
from winnow.records import StageResult


@dataclass
class Task:
    """A stage task running on an actor: its batch, its actor, its output's ref."""

    flight: Flight
    actor: int
    output: Any


class Scheduler:
    """The batches of one run that are not done yet, and their stage tasks.

    Attributes:
        todo: batches not admitted yet, in plan order.
        queues: per stage index, batches waiting for a free actor.
        waiting: a heap of (when, tie, batch): retries waiting out a backoff.
        outstanding: the stage tasks running, by their result's object ref.
        in_flight: batches admitted that have not left the pipeline.
    """

    def __init__(
        self, flights: Iterable[Flight], workers: Workers, names: list[str], max_in_flight: int
    ) -> None:
        self.todo: deque[Flight] = deque(flights)
        self.queues: dict[int, deque[Flight]] = {i: deque() for i in range(len(names))}
        self.waiting: list[tuple[float, int, Flight]] = []
        self.outstanding: dict[Any, Task] = {}
        self.in_flight = 0
        self.workers = workers
        self.names = names
        self.max_in_flight = max_in_flight
        self._tie = itertools.count()
        self._starved_since: dict[int, float] = {}

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
        self.workers.readers.open(f.plan for f in self.todo)

    def step(self) -> None:
        """Admit new batches, release retries whose backoff is over, and send
        queued batches to actors with room."""
        while self.todo and self.in_flight < self.max_in_flight:
            flight = self.todo.popleft()
            self.in_flight += 1
            self._enter(flight)
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            _, _, flight = heapq.heappop(self.waiting)
            self._enter_again(flight)
        for i, queue in self.queues.items():
            self._dispatch(i, queue)

    def pause(self) -> None:
        """Nothing running: sleep until a retry is due or an actor may be back."""
        if self.waiting and not self._queued():
            time.sleep(max(0.0, min(0.2, self.waiting[0][0] - time.monotonic())))
        elif self._queued():
            time.sleep(0.05)  # work queued for actors that are being restarted

    def _enter(self, flight: Flight) -> None:
        """A batch's first stage: read from the source, or from the artifact
        committed by the stage before it."""
        first = flight.plan.first_run
        flight.stage = first
        if first == 0:
            flight.meta, flight.data, flight.reader = self.workers.readers.first(flight.plan)
        else:
            flight.input_artifact = flight.plan.prior[first - 1]["artifact"]  # type: ignore[index]
            flight.data = {"artifact": flight.input_artifact}
        self.queues[first].append(flight)

    def _enter_again(self, flight: Flight) -> None:
        """A retry: its input is read again (an object ref may have died with its node)."""
        if flight.stage > 0 and flight.input_artifact is not None:
            flight.data = {"artifact": flight.input_artifact}
        elif flight.stage == 0:
            flight.meta, flight.data, flight.reader = self.workers.readers.again(flight.plan)
        self.queues[flight.stage].append(flight)

    def _dispatch(self, i: int, queue: deque[Flight]) -> None:
        pool = self.workers.pools[self.names[i]]
        pool.check()
        if i == 0:
            self.workers.readers.pool.check()
        self._watch_starved(i, queue, pool)
        while queue:
            idx = pool.pick()
            if idx is None:
                return
            flight = queue.popleft()
            meta = flight.meta if i == 0 else None
            actions = flight.plan.actions
            keep = i + 1 < len(actions) and actions[i + 1] != SKIP  # the next stage reads it
            rec_ref, out_ref = (
                pool.actors[idx].run.options(num_returns=2).remote(flight.data, meta, keep)
            )
            pool.load[idx] += 1
            self.outstanding[rec_ref] = Task(flight, idx, out_ref)

    def _watch_starved(self, i: int, queue: deque[Flight], pool: Pool) -> None:
        """Fail with a clear error when a stage has work but no live actor for long."""
        if not queue or pool.live():
            self._starved_since.pop(i, None)
            return
        since = self._starved_since.setdefault(i, time.monotonic())
        if time.monotonic() - since > READY_TIMEOUT_S:
            raise StageFailed(
                f"stage {self.names[i]!r} has work but none of its {len(pool.actors)} actors came "
                f"back within {READY_TIMEOUT_S:.0f}s after they died: the cluster lost the "
                "capacity to host them (see `winnow plan --address ...`); rerun to resume",
                error_type="Unschedulable",
            )

    # -- results -----------------------------------------------------------
    def collect(self, timeout: float) -> Iterator[tuple[Task, StageResult]]:
        """Each stage task that finished within ``timeout``, with its result.

        An actor (or, for a source read, the reader) whose task died with a
        cluster failure gets no more work until it answers a probe.
        """
        refs = list(self.outstanding)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in ready:
            task = self.outstanding.pop(ref)
            pool = self.workers.pools[self.names[task.flight.stage]]
            pool.load[task.actor] -= 1
            result = fetch_result(ref)
            kind = result.error.type if result.error else None
            if kind in INFRA_ERRORS:
                flight = task.flight
                reader_lost = flight.stage == 0 and flight.reader is not None
                if kind == "WorkerDied" or not reader_lost:
                    pool.lost(task.actor)
                if flight.reader is not None and reader_lost:
                    self.workers.readers.pool.lost(flight.reader)
            yield task, result

    def enqueue(self, flight: Flight) -> None:
        """Queue a batch for its (next) stage, ``flight.stage``."""
        self.queues[flight.stage].append(flight)

    def retry_later(self, flight: Flight, delay: float) -> None:
        """Queue a batch for the same stage again once ``delay`` seconds have passed."""
        heapq.heappush(self.waiting, (time.monotonic() + delay, next(self._tie), flight))

    def leave(self, flight: Flight) -> None:
        """A batch left the pipeline: one more may be admitted."""
        self.in_flight -= 1
