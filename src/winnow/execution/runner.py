"""The driver loop: stream batches through the stage pools with bounded work.

The driver holds only keys, object refs and small records. Arrow batches move
reader -> stage -> stage through Ray's object store (a first stage reads
batches aligned with Parquet row groups itself; see ``inputs``). A batch's checkpoint is
written (buffered into a segment) only after its stage actor has published and
verified the artifact.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from winnow.accounting import Tally, row_counts
from winnow.errors import StageFailed
from winnow.execution import telemetry
from winnow.execution.cluster import register_pipeline_code, size_pools
from winnow.execution.failures import INFRA_ERRORS, MAX_INFRA_RETRIES, fetch_result
from winnow.execution.inputs import SourceInputs
from winnow.execution.outcome import (
    Outcome,
    Progress,
    StageCounts,
    checkpoint_record,
    count_skips,
)
from winnow.execution.pools import (
    IDLE,
    READY_TIMEOUT_S,
    SCALE_EVERY_S,
    Pool,
    create_actor,
    evict_idle_except,
    fits_now,
    reader_key,
    stage_key,
    start_pools,
    take_idle,
)
from winnow.plan import RETRY, SKIP, BatchPlan, Plan
from winnow.records import BatchStatus, StageResult
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.state import State, event


@dataclass
class Flight:
    """One batch on its way through the stages."""

    order: int
    plan: BatchPlan
    stage: int = 0
    data: Any = None
    meta: Any = None
    attempts: dict[int, int] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    # The committed artifact this stage's input came from: a retry reads it
    # back instead of an object ref that may have died with its node.
    input_artifact: dict[str, Any] | None = None
    reader: int | None = None  # the reader actor that read a stage-0 input
    rows: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # per stage, its counts
    infra: int = 0  # failures of the cluster (an actor or node lost), not of the batch


class Runner:
    def __init__(
        self,
        plan: Plan,
        state: State,
        artifacts: ArtifactStore,
        job_id: str,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        on_event: Callable[[list[dict[str, Any]]], None] | None = None,
        reuse: bool = False,
    ) -> None:
        self.plan = plan
        self.profile = plan.profile
        self.specs = plan.specs
        self.names = [s.name for s in self.specs]
        self.state = state
        self.artifacts = artifacts
        self.job_id = job_id
        self.progress = progress or Progress()
        self.stop = stop or threading.Event()
        self.checkpoints: CheckpointStore = state.checkpoints(
            job_id, plan.profile.checkpoint_flush_every
        )
        self.events: list[dict[str, Any]] = []
        self.counts = {n: StageCounts() for n in self.names}
        self.errors: dict[str, dict[str, Any]] = {}
        self.poisoned: list[dict[str, Any]] = []
        self.integrity: list[dict[str, Any]] = []
        self.finals: list[dict[str, Any] | None] = [None] * len(plan.batches)
        self.abort = False
        self.storage_failure: str | None = None
        self.tally = Tally(self.names)
        self._unfinished: dict[int, Flight] = {}
        self.reuse = reuse  # keep actors for the next job in this process (the gateway)
        self._last_flush = time.monotonic()
        self._starved_since: dict[int, float] = {}
        self._last_scale = time.monotonic()

    # -- setup -------------------------------------------------------------
    def _start_actors(self) -> None:
        sizes = size_pools(self.specs, self.plan.active_stages())
        register_pipeline_code(self.specs)
        self.pools: dict[str, Pool] = {}
        self._keys: dict[str, tuple[Any, ...]] = {}
        wanted = {spec.name: stage_key(spec, self.artifacts, self.profile) for spec in self.specs}
        readers_key = reader_key(self.plan, self.artifacts)
        if self.reuse:
            evict_idle_except({*wanted.values(), readers_key})
        for spec in self.specs:
            self._keys[spec.name] = wanted[spec.name]
        idle = {
            s.name: take_idle(wanted[s.name], sizes.get(s.name, 0)) if self.reuse else []
            for s in self.specs
        }
        starting = start_pools(self.specs, sizes, idle, self.job_id, self.artifacts, self.profile)
        self._keys["read"] = readers_key
        self.inputs = SourceInputs(
            self.plan, self.artifacts, self.job_id, readers_key if self.reuse else None
        )
        self.pools, dropped = starting.wait()
        if dropped:
            self.events.append(event("pools_shrunk", self.job_id, dropped=dropped))

    def _stop_actors(self) -> None:
        keep = self.reuse and not self.abort and not self.stop.is_set()
        pools = getattr(self, "pools", {})
        groups = [
            *((n, p.actors) for n, p in pools.items()),
            ("read", self.inputs.readers if hasattr(self, "inputs") else []),
        ]
        for name, actors in groups:
            if keep and actors:
                IDLE.setdefault(self._keys[name], []).extend(actors)
                continue
            for actor in actors:
                ray.kill(actor, no_restart=True)

    # -- main loop ---------------------------------------------------------
    def run(self) -> Outcome:
        plan = self.plan
        totals = {n: len(plan.batches) for n in self.names}
        done = count_skips(plan, self.counts, self.finals, self.tally)
        todo = deque(
            Flight(order, bp)
            for order, bp in enumerate(plan.batches)
            if bp.first_run < len(self.specs)
        )
        self._unfinished = {f.order: f for f in todo}
        self.progress.start(totals, done)
        try:
            if todo:
                self._start_actors()
                self._loop(todo)
        finally:
            self._flush(force=True)
            self.progress.stop()
            self._stop_actors()
            if todo:
                self._compact()
            for flight in list(self._unfinished.values()):  # interrupted or abandoned
                self._account(flight)
        return Outcome(
            self.counts,
            self.finals,
            self.poisoned,
            self.integrity,
            self.stop.is_set(),
            self.errors,
            self.storage_failure,
            self.tally,
        )

    def _loop(self, todo: deque[Flight]) -> None:
        queues: dict[int, deque[Flight]] = {i: deque() for i in range(len(self.specs))}
        waiting: list[tuple[float, int, Flight]] = []  # retry heap
        outstanding: dict[Any, tuple[Flight, int, Any]] = {}
        self.inputs.open(f.plan for f in todo)
        tie = itertools.count()
        in_flight = 0
        limit = self.profile.max_in_flight
        while True:
            stopping = self.stop.is_set() or self.abort
            if not stopping:
                while todo and in_flight < limit:
                    flight = todo.popleft()
                    in_flight += 1
                    self._enter(flight, queues)
                now = time.monotonic()
                while waiting and waiting[0][0] <= now:
                    _, _, flight = heapq.heappop(waiting)
                    self._enter_stage(flight, queues, retry=True)
                for i, queue in queues.items():
                    self._dispatch(i, queue, outstanding)
                self._autoscale(todo, waiting, queues, outstanding)
            if not outstanding:
                if stopping or (not todo and not waiting and not any(queues.values())):
                    break
                if waiting and not any(queues.values()):
                    time.sleep(max(0.0, min(0.2, waiting[0][0] - time.monotonic())))
                elif any(queues.values()):
                    time.sleep(0.05)  # work queued for actors that are being restarted
                continue
            ready, _ = ray.wait(list(outstanding), num_returns=len(outstanding), timeout=0.1)
            for ref in ready:
                flight, actor_idx, out_ref = outstanding.pop(ref)
                pool = self.pools[self.names[flight.stage]]
                pool.load[actor_idx] -= 1
                result = fetch_result(ref)
                kind = result.error.type if result.error else None
                if kind in INFRA_ERRORS:
                    # The actor, or for a source read the reader, may be gone.
                    reader_lost = flight.stage == 0 and flight.reader is not None
                    if kind == "WorkerDied" or not reader_lost:
                        pool.lost(actor_idx)
                    if reader_lost:
                        self.inputs.pool.lost(flight.reader)  # type: ignore[arg-type]
                finished = self._handle(flight, result, out_ref, queues, waiting, tie)
                if finished:
                    in_flight -= 1
                    self._account(flight)
            self._flush()

    def _enter(self, flight: Flight, queues: dict[int, deque[Flight]]) -> None:
        first = flight.plan.first_run
        flight.stage = first
        if first == 0:
            flight.meta, flight.data, flight.reader = self.inputs.first(flight.plan)
        else:
            flight.input_artifact = flight.plan.prior[first - 1]["artifact"]  # type: ignore[index]
            flight.data = {"artifact": flight.input_artifact}
        queues[first].append(flight)

    def _enter_stage(self, flight: Flight, queues: dict[int, deque[Flight]], retry: bool) -> None:
        if retry and flight.stage > 0 and flight.input_artifact is not None:
            flight.data = {"artifact": flight.input_artifact}
        elif retry and flight.stage == 0:
            flight.meta, flight.data, flight.reader = self.inputs.again(flight.plan)
        queues[flight.stage].append(flight)

    def _dispatch(self, i: int, queue: deque[Flight], outstanding: dict[Any, Any]) -> None:
        pool = self.pools[self.names[i]]
        pool.check()
        if i == 0:
            self.inputs.pool.check()
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
            outstanding[rec_ref] = (flight, idx, out_ref)

    def _autoscale(
        self,
        todo: deque[Flight],
        waiting: list[tuple[float, int, Flight]],
        queues: dict[int, deque[Flight]],
        outstanding: dict[Any, tuple[Flight, int, Any]],
    ) -> None:
        """Every few seconds: stop the pools of stages no batch will reach again
        (freeing their CPUs/GPUs), and grow a backlogged pool by one actor, up to
        its max_actors, when the cluster has room for it now."""
        now = time.monotonic()
        if now - self._last_scale < SCALE_EVERY_S:
            return
        self._last_scale = now
        lowest = min(
            [
                *(f.plan.first_run for f in todo),
                *(f.stage for _, _, f in waiting),
                *(i for i, q in queues.items() if q),
                *(f.stage for f, _, _ in outstanding.values()),
            ],
            default=len(self.specs),
        )
        for i, spec in enumerate(self.specs):
            pool = self.pools.get(spec.name)
            if pool is None or not pool.actors:
                continue
            if i < lowest and not self.reuse and pool.live():
                self.events.append(
                    event("pool_retired", self.job_id, stage=spec.name, actors=pool.retire())
                )
                continue
            backlog = len(queues[i]) > 0 and pool.pick() is None
            if (
                backlog
                and len(pool.actors) < spec.resources.max_actors
                and not pool.starting()
                and fits_now(spec.resources)
            ):
                idx = len(pool.actors)
                pool.add(create_actor(spec, idx, self.job_id, self.artifacts, self.profile))
                self.events.append(
                    event("pool_grown", self.job_id, stage=spec.name, actors=idx + 1)
                )

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

    def _handle(
        self,
        flight: Flight,
        result: StageResult,
        out_ref: Any,
        queues: dict[int, deque[Flight]],
        waiting: list[Any],
        tie: Any,
    ) -> bool:
        """Commit one stage result; return True when the batch leaves the pipeline."""
        i = flight.stage
        name = self.names[i]
        bp = flight.plan
        counts = self.counts[name]
        prior = bp.prior[i]
        previous = int(prior.get("attempt", 0)) if prior and bp.actions[i] == RETRY else 0
        attempt = flight.attempts.get(i, previous) + 1
        flight.attempts[i] = attempt
        record = checkpoint_record(self.plan.stages[i], i, bp, attempt, self.job_id, result)
        counts.bad_records += record.bad_records or 0
        status = result.status
        if status == BatchStatus.SUCCEEDED:
            assert result.artifact is not None
            written = self.checkpoints.append(record)
            flight.rows[i] = row_counts(written)
            self.events.append(
                event(
                    "checkpoint",
                    self.job_id,
                    stage=name,
                    key=bp.keys[i],
                    status=BatchStatus.SUCCEEDED,
                    attempt=attempt,
                    digest=result.artifact["digest"],
                )
            )
            counts.run += 1
            counts.rows_in += result.rows_in or 0
            counts.rows_out += result.rows_out or 0
            counts.bytes_out += result.artifact["bytes"]
            counts.busy_s += result.duration_s or 0.0
            self.progress.advance(name, result.rows_in or 0)
            nxt = i + 1
            while nxt < len(self.specs) and bp.actions[nxt] == SKIP:
                nxt += 1
            if nxt >= len(self.specs):
                self.finals[flight.order] = written if nxt == i + 1 else bp.prior[-1]
                return True
            flight.stage = nxt
            if nxt == i + 1:
                flight.input_artifact = result.artifact
                flight.data = out_ref
            else:
                flight.input_artifact = bp.prior[nxt - 1]["artifact"]  # type: ignore[index]
                flight.data = {"artifact": flight.input_artifact}
            flight.meta = None
            queues[nxt].append(flight)
            return False
        error = result.failure
        self.checkpoints.append(record)
        group = self.errors.setdefault(
            error.type, {"count": 0, "example": error.to_dict(), "stages": []}
        )
        group["count"] += 1
        if name not in group["stages"]:
            group["stages"].append(name)
        if status == BatchStatus.STORAGE:
            counts.failed += 1
            if self.storage_failure is None:
                self.storage_failure = (
                    f"the artifact store {self.artifacts.root_url} refused a write "
                    f"(stage {name}): {error.message}. Free space (or fix the store) and "
                    "rerun the same command: committed batches stay committed"
                )
            self.abort = True
            return True
        if status == BatchStatus.INTEGRITY:
            counts.failed += 1
            self.integrity.append({"stage": name, "key": bp.keys[i], "message": error.message})
            self.events.append(
                event("integrity", self.job_id, stage=name, key=bp.keys[i], message=error.message)
            )
            self.abort = True  # fail fast: an integrity failure means storage is not trustworthy
            return True
        # A lost actor or node is not the batch's fault: it has its own budget,
        # with backoff long enough for Ray to notice and restart the actor.
        infra = error.type in INFRA_ERRORS
        flight.infra += infra
        may_retry = (
            flight.infra <= MAX_INFRA_RETRIES
            if infra
            else attempt - flight.infra < self.profile.max_attempts
        )
        if may_retry and not self.stop.is_set():
            counts.retried += 1
            telemetry.record_retry(name)
            tries = flight.infra if infra else attempt - flight.infra
            base = max(self.profile.retry_backoff_s, 0.5) if infra else self.profile.retry_backoff_s
            delay = min(30.0, base * 2 ** (tries - 1)) * (0.5 + random.random())
            self.events.append(
                event(
                    "retry",
                    self.job_id,
                    stage=name,
                    key=bp.keys[i],
                    attempt=attempt,
                    error=error.type,
                    delay_s=round(delay, 3),
                )
            )
            heapq.heappush(waiting, (time.monotonic() + delay, next(tie), flight))
            return False
        counts.failed += 1
        self.poisoned.append(
            {
                "stage": name,
                "key": bp.keys[i],
                "attempts": attempt,
                "error_type": error.type,
                "message": error.message,
                "source": record.source.to_dict(),
            }
        )
        self.events.append(
            event(
                "batch_failed",
                self.job_id,
                stage=name,
                key=bp.keys[i],
                attempts=attempt,
                error=error.type,
            )
        )
        return True

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
        if not force and time.monotonic() - self._last_flush < 2.0:
            return
        self._last_flush = time.monotonic()
        self.checkpoints.flush()
        events, self.events = self.events, []
        self.state.append_events(events)
