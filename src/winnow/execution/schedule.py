"""Scheduling on Ray: which actor runs each queued batch, and collecting results.

The queues, admission and retry heap are ``queues.Queues`` (shared with the
local executor); this adds the job's actors (``workers``), started once,
scaled as the run goes (``scaling``) and stopped or kept once, and sends each
queued batch to the least-loaded live actor of its stage's pool.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from winnow.errors import StageFailed
from winnow.execution import telemetry
from winnow.execution.failures import INFRA_ERRORS
from winnow.execution.flight import Flight
from winnow.execution.inputs import SourceInputs
from winnow.execution.pools import READY_TIMEOUT_S, SCALE_EVERY_S, Pool, fits_now, short_cause
from winnow.execution.queues import Queues, Task
from winnow.execution.scaling import Autoscaler
from winnow.execution.workers import Workers
from winnow.plan import SKIP, Plan
from winnow.records import BatchStatus, ErrorRecord, StageResult
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.state import event


class Scheduler(Queues):
    """The batches of one run on Ray, and the actors that run them.

    Args:
        flights: the batches with work, in plan order.
        plan: the run's plan.
        artifacts: where stage actors write artifacts.
        job_id: the job this run is.
        sizes: actors per active stage, as the cluster was sized once for
            this run (``cluster.size_pools``).
        reuse: keep the actors for the next job of this process (the gateway).
        emit: where events go (written with the runner's next flush).
    """

    def __init__(
        self,
        flights: Iterable[Flight],
        plan: Plan,
        artifacts: ArtifactStore,
        job_id: str,
        sizes: dict[str, int],
        reuse: bool,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(flights, [s.name for s in plan.specs], plan.profile.max_in_flight)
        self.workers = Workers(plan, artifacts, job_id, reuse)
        self.autoscaler = Autoscaler(self.workers, job_id, reuse, emit)
        self.job_id = job_id
        self.sizes = sizes
        self.emit = emit
        self._starved_since: dict[int, float] = {}
        self._spares: set[int] = set()  # stages a spare actor was started for (once each)
        self._spare_asked: dict[int, float] = {}  # stage -> when the cluster was last asked
        self._no_room: set[int] = set()  # stages whose spare did not fit when last asked

    def start(self) -> None:
        """Start (or take over idle) actors for the job; note any pool left short in an event."""
        dropped = self.workers.start(self.sizes)
        if dropped:
            self.emit(event("pools_shrunk", self.job_id, dropped=dropped))

    def stop(self, keep: bool) -> None:
        """Stop the job's actors, or ``keep`` them idle for the next job."""
        self.workers.stop(keep)

    def inputs(self) -> SourceInputs:
        """The reader actors, which read source batches for the first stage."""
        return self.workers.readers

    def step(self) -> None:
        """Admit, release and send batches as the base class does, then scale the pools."""
        super().step()
        self.autoscaler.tick(self)

    def retry_later(self, flight: Flight, delay: float) -> None:
        """Count the retry in Ray's metrics, then queue it as the base class does."""
        telemetry.record_retry(self.names[flight.stage])
        super().retry_later(flight, delay)

    # -- sending work ------------------------------------------------------
    def dispatch(self) -> None:
        """Send each stage's queued batches to the least-loaded live actors of its pool."""
        for i, queue in self.queues.items():
            self._dispatch(i, queue)

    def _dispatch(self, i: int, queue: deque[Flight]) -> None:
        pool = self.workers.pools[self.names[i]]
        pool.check()
        if i == 0:
            self.workers.readers.pool.check()
        self._watch_starved(i, queue, pool)
        stuck = self.stuck_actors(i)  # no new work queued behind a straggler
        while queue:
            idx = pool.pick(avoid=stuck)
            if idx is None:
                return
            self._send(pool, idx, queue.popleft())

    def _send(self, pool: Pool, idx: int, flight: Flight, twin: bool = False) -> None:
        """Send the batch's current stage task to actor ``idx`` of the stage's pool."""
        i = flight.stage
        meta = flight.meta if i == 0 else None
        actions = flight.plan.actions
        keep = i + 1 < len(actions) and actions[i + 1] != SKIP  # the next stage reads it
        position = flight.plan.source.file.url, flight.plan.source.start
        context = flight.plan.context if i == 0 else None  # a rejoin batch's
        rec_ref, out_ref = (
            pool.actors[idx]
            .run.options(num_returns=2)
            .remote(flight.data, meta, keep, position, context)
        )
        pool.load[idx] += 1
        self.track(rec_ref, Task(flight, idx, out_ref, twin=twin))

    # -- stragglers --------------------------------------------------------
    def speculate(self, task: Task) -> bool:
        """Send a straggler's batch to an idle live actor of its stage, if its queue is empty.

        When no other actor of the stage could ever take it (a pool of one, or
        every other actor straggles too), a spare actor is started first.
        """
        pool = self.workers.pools[self.names[task.stage]]
        self._spare_if_alone(task, pool)
        if self.queues[task.stage]:
            return False
        idle = [
            k
            for k in range(len(pool.actors))
            if k != task.actor and k not in pool.down and pool.load[k] == 0
        ]
        if not idle:
            return False
        self._send(pool, idle[0], task.flight, twin=True)
        return True

    def _spare_if_alone(self, task: Task, pool: Pool) -> None:
        """Start one spare actor for a straggler's stage when no other actor of it can work.

        Without one, a batch hung in a one-actor pool would never get its twin
        (and the batches queued behind it never run): the job would hang. The
        spare takes the stage's queue, then the twin; it is started once per
        stage and run (beyond ``max_actors``: it exists for the straggler),
        when the cluster has room for it now, asked at most once per
        ``SCALE_EVERY_S``.
        """
        stage = task.stage
        stuck = self.stuck_actors(stage)
        others = [k for k in range(len(pool.actors)) if k not in pool.down and k not in stuck]
        now = time.monotonic()
        if stage in self._spares or others or pool.starting():
            self._no_room.discard(stage)
            return
        if now - self._spare_asked.get(stage, 0.0) < SCALE_EVERY_S:
            return
        self._spare_asked[stage] = now
        spec = self.workers.specs[stage]
        if not fits_now(spec.resources):
            self._no_room.add(stage)
            return
        self._no_room.discard(stage)
        self._spares.add(stage)
        size = self.workers.grow(spec)
        label = f"winnow:{self.job_id}:{spec.name}:{size - 1}"
        key = task.flight.plan.keys[stage]
        self.emit(event("spare_started", self.job_id, stage=spec.name, key=key, actor=label))

    def alone(self, task: Task) -> bool:
        """No other actor of the stage can take the batch, and the cluster had no room for a spare."""
        return task.stage in self._no_room

    def abandon(self, task: Task) -> bool:
        """Stop waiting for a task and kill its actor (Ray restarts it), freeing what it holds.

        The tasks queued behind it on that actor never started: they go back to
        the front of their stage's queue, as if never sent (no failure is
        recorded); a stale or speculative one among them is dropped.
        """
        pool = self.workers.pools[self.names[task.stage]]
        for other in self.lane(task):
            self.untrack(self.key_of(other))
            pool.load[task.actor] -= 1
            if other is not task and not self.stale(other) and not self.twins(other):
                self.queues[other.stage].appendleft(other.flight)
        ray.kill(pool.actors[task.actor], no_restart=False)
        pool.lost(task.actor)
        return True

    def actor_label(self, task: Task) -> str:
        """The Ray actor's name (as the pool created it)."""
        return f"winnow:{self.job_id}:{self.names[task.stage]}:{task.actor}"

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
            task = self.untrack(ref)
            pool = self.workers.pools[self.names[task.stage]]
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
