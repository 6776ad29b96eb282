"""The driver loop: stream batches through the stage pools with bounded work.

The driver holds only keys, object refs and small records. Arrow batches move
reader -> stage -> stage through Ray's object store. A batch's checkpoint is
written (buffered into a segment) only after its stage actor has published and
verified the artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from winnow.errors import StageFailed
from winnow.execution.actors import SourceReader, StageWorker
from winnow.execution.cluster import register_pipeline_code, size_pools
from winnow.execution.outcome import Outcome, Progress, StageCounts, count_skips
from winnow.plan import RETRY, SKIP, BatchPlan, Plan
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.checkpoints import FAILED, SUCCEEDED, CheckpointStore
from winnow.storage.state import State, event

READY_TIMEOUT_S = 300.0


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
        self.reuse = reuse  # keep actors for the next job in this process (the gateway)
        self._last_flush = time.monotonic()

    # -- setup -------------------------------------------------------------
    def _start_actors(self) -> None:
        active = [
            any(bp.actions[i] != SKIP for bp in self.plan.batches) for i in range(len(self.specs))
        ]
        sizes = size_pools(self.specs, active)
        register_pipeline_code(self.specs)
        worker: Any = ray.remote(StageWorker)
        self.pools: dict[str, list[Any]] = {}
        self._keys: dict[str, tuple[Any, ...]] = {}
        wanted = {spec.name: _stage_key(spec, self.artifacts, self.profile) for spec in self.specs}
        reader_key = _reader_key(self.plan, self.artifacts)
        if self.reuse:
            _evict_idle_except({*wanted.values(), reader_key})
        ready: list[tuple[str, Any]] = []
        for spec in self.specs:
            n = sizes.get(spec.name, 0)
            self._keys[spec.name] = wanted[spec.name]
            actors = _take_idle(wanted[spec.name], n) if self.reuse else []
            for i in range(len(actors), n):
                r = spec.resources
                actor = worker.options(
                    name=f"winnow:{self.job_id}:{spec.name}:{i}",
                    num_cpus=r.num_cpus,
                    num_gpus=r.num_gpus,
                    memory=r.memory_mb * 1024 * 1024 if r.memory_mb else None,
                    max_restarts=3,
                    max_task_retries=0,
                ).remote(
                    spec.stage,
                    self.artifacts,
                    self.profile.artifact_format,
                    self.profile.compression,
                )
                actors.append(actor)
            ready.extend((spec.name, a.ready.remote()) for a in actors)
            self.pools[spec.name] = actors
        self.outstanding_per_actor = {n: [0] * len(a) for n, a in self.pools.items()}
        self.readers = []
        self._keys["read"] = reader_key
        if any(bp.first_run == 0 for bp in self.plan.batches):
            reader_cls: Any = ray.remote(SourceReader)
            wanted_readers = self.profile.reader_actors
            self.readers = _take_idle(reader_key, wanted_readers) if self.reuse else []
            self.readers += [
                reader_cls.options(
                    name=f"winnow:{self.job_id}:read:{i}", num_cpus=0, max_restarts=3
                ).remote(
                    self.artifacts,
                    self.plan.pipeline.schema,
                    self.profile.on_bad_record,
                    self.profile.storage_options,
                )
                for i in range(len(self.readers), wanted_readers)
            ]
        for name, ref in ready:
            try:
                ray.get(ref, timeout=READY_TIMEOUT_S)
            except RayActorError as exc:
                raise StageFailed(
                    f"stage {name!r} could not start: its setup() failed: {_cause(exc)}",
                    error_type="SetupFailed",
                ) from None
            except GetTimeoutError:
                raise StageFailed(
                    f"stage {name!r}: no actor started within {READY_TIMEOUT_S:.0f}s; the cluster "
                    "cannot place its resource request (see `winnow plan`)",
                    error_type="Unschedulable",
                ) from None

    def _stop_actors(self) -> None:
        keep = self.reuse and not self.abort and not self.stop.is_set()
        groups = [*getattr(self, "pools", {}).items(), ("read", getattr(self, "readers", []))]
        for name, actors in groups:
            if keep and actors:
                _IDLE.setdefault(self._keys[name], []).extend(actors)
                continue
            for actor in actors:
                ray.kill(actor, no_restart=True)

    # -- main loop ---------------------------------------------------------
    def run(self) -> Outcome:
        plan = self.plan
        totals = {n: len(plan.batches) for n in self.names}
        done = count_skips(plan, self.counts, self.finals)
        todo = deque(
            Flight(order, bp)
            for order, bp in enumerate(plan.batches)
            if bp.first_run < len(self.specs)
        )
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
        return Outcome(
            self.counts, self.finals, self.poisoned, self.integrity, self.stop.is_set(), self.errors
        )

    def _loop(self, todo: deque[Flight]) -> None:
        queues: dict[int, deque[Flight]] = {i: deque() for i in range(len(self.specs))}
        waiting: list[tuple[float, int, Flight]] = []  # retry heap
        outstanding: dict[Any, tuple[Flight, int, Any]] = {}
        streams = self._plan_streams(todo)
        tie = itertools.count()
        in_flight = 0
        limit = self.profile.max_in_flight
        while True:
            stopping = self.stop.is_set() or self.abort
            if not stopping:
                while todo and in_flight < limit:
                    flight = todo.popleft()
                    in_flight += 1
                    self._enter(flight, queues, streams)
                now = time.monotonic()
                while waiting and waiting[0][0] <= now:
                    _, _, flight = heapq.heappop(waiting)
                    self._enter_stage(flight, queues, retry=True)
                for i, queue in queues.items():
                    self._dispatch(i, queue, outstanding)
            if not outstanding:
                if stopping or (not todo and not waiting and not any(queues.values())):
                    break
                if waiting and not any(queues.values()):
                    time.sleep(max(0.0, min(0.2, waiting[0][0] - time.monotonic())))
                continue
            ready, _ = ray.wait(list(outstanding), num_returns=len(outstanding), timeout=0.1)
            for ref in ready:
                flight, actor_idx, out_ref = outstanding.pop(ref)
                name = self.names[flight.stage]
                self.outstanding_per_actor[name][actor_idx] -= 1
                result = self._result(ref, flight)
                finished = self._handle(flight, result, out_ref, queues, waiting, tie)
                if finished:
                    in_flight -= 1
            self._flush()

    def _plan_streams(self, todo: deque[Flight]) -> dict[str, tuple[Any, str, int]]:
        """Group batches that start from the source into one read stream per file."""
        by_file: dict[str, list[Flight]] = {}
        for f in todo:
            if f.plan.first_run == 0:
                by_file.setdefault(f.plan.source.file.identity, []).append(f)
        streams: dict[str, tuple[Any, str, int]] = {}
        for n, (identity, flights) in enumerate(by_file.items()):
            reader: Any = self.readers[n % len(self.readers)]
            handle = f"{identity[:16]}-{n}"
            ranges = [(f.plan.source.start, f.plan.source.stop) for f in flights]
            reader.open.remote(handle, flights[0].plan.source.file, ranges)
            streams[identity] = (reader, handle, len(flights))
        return streams

    def _enter(
        self, flight: Flight, queues: dict[int, deque[Flight]], streams: dict[str, Any]
    ) -> None:
        first = flight.plan.first_run
        flight.stage = first
        if first == 0:
            reader: Any
            reader, handle, _ = streams[flight.plan.source.file.identity]
            flight.meta, flight.data = reader.next.options(num_returns=2).remote(handle)
        else:
            flight.data = {"artifact": flight.plan.prior[first - 1]["artifact"]}  # type: ignore[index]
        queues[first].append(flight)

    def _enter_stage(self, flight: Flight, queues: dict[int, deque[Flight]], retry: bool) -> None:
        if retry and flight.stage == 0:
            src = flight.plan.source
            reader: Any = random.choice(self.readers)
            flight.meta, flight.data = reader.read_one.options(num_returns=2).remote(
                src.file, src.start, src.stop
            )
        queues[flight.stage].append(flight)

    def _dispatch(self, i: int, queue: deque[Flight], outstanding: dict[Any, Any]) -> None:
        name = self.names[i]
        load = self.outstanding_per_actor[name]
        actors = self.pools[name]
        while queue:
            idx = min(range(len(load)), key=load.__getitem__)
            if load[idx] >= 2:
                return
            flight = queue.popleft()
            key = flight.plan.keys[i]
            meta = flight.meta if i == 0 else None
            actions = flight.plan.actions
            keep = i + 1 < len(actions) and actions[i + 1] != SKIP  # the next stage reads it
            rec_ref, out_ref = (
                actors[idx].run.options(num_returns=2).remote(key, flight.data, meta, keep)
            )
            load[idx] += 1
            outstanding[rec_ref] = (flight, idx, out_ref)

    def _result(self, ref: Any, flight: Flight) -> dict[str, Any]:
        try:
            result: dict[str, Any] = ray.get(ref)
            return result
        except RayTaskError as exc:  # the input (a source read) failed
            cause = exc.cause if exc.cause is not None else exc
            return {
                "status": FAILED,
                "error": {
                    "type": type(cause).__name__,
                    "message": str(cause)[:2000],
                    "traceback": str(exc)[-8000:],
                },
            }
        except RayActorError as exc:
            return {
                "status": FAILED,
                "error": {"type": "WorkerDied", "message": _cause(exc), "traceback": ""},
            }
        except RayError as exc:
            return {
                "status": FAILED,
                "error": {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": ""},
            }

    def _handle(
        self,
        flight: Flight,
        result: dict[str, Any],
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
        record: dict[str, Any] = {
            "stage": name,
            "key": bp.keys[i],
            "input_key": bp.keys[i - 1] if i else bp.source.key,
            "batch": bp.source.key,
            "source": {
                "file": bp.source.file.url,
                "start": bp.source.start,
                "stop": bp.source.stop,
            },
            "attempt": attempt,
            "job_id": self.job_id,
            **{
                k: result.get(k)
                for k in (
                    "started_at",
                    "duration_s",
                    "process_s",
                    "commit_s",
                    "node",
                    "pid",
                    "rows_in",
                    "rows_out",
                    "metrics",
                )
                if k in result
            },
        }
        meta = result.get("source_meta")
        if meta:
            record["source_rows"] = meta["rows"]
            record["bad_records"] = meta.get("bad", 0)
            if meta.get("quarantine"):
                record["quarantine"] = meta["quarantine"]
            counts.bad_records += meta.get("bad", 0)
        status = result["status"]
        if status == SUCCEEDED:
            record.update(status=SUCCEEDED, artifact=result["artifact"])
            self.checkpoints.append(record)
            self.events.append(
                event(
                    "checkpoint",
                    self.job_id,
                    stage=name,
                    key=bp.keys[i],
                    status=SUCCEEDED,
                    attempt=attempt,
                    digest=result["artifact"]["digest"],
                )
            )
            counts.run += 1
            counts.rows_in += result.get("rows_in", 0)
            counts.rows_out += result.get("rows_out", 0)
            counts.bytes_out += result["artifact"]["bytes"]
            counts.busy_s += result.get("duration_s", 0.0)
            self.progress.advance(name, result.get("rows_in", 0))
            nxt = i + 1
            while nxt < len(self.specs) and bp.actions[nxt] == SKIP:
                nxt += 1
            if nxt >= len(self.specs):
                self.finals[flight.order] = record if nxt == i + 1 else bp.prior[-1]
                return True
            flight.stage = nxt
            flight.data = out_ref if nxt == i + 1 else {"artifact": bp.prior[nxt - 1]["artifact"]}  # type: ignore[index]
            flight.meta = None
            queues[nxt].append(flight)
            return False
        error = result.get("error") or {"type": "Unknown", "message": "", "traceback": ""}
        record.update(status=FAILED, error=error)
        self.checkpoints.append(record)
        group = self.errors.setdefault(error["type"], {"count": 0, "example": error, "stages": []})
        group["count"] += 1
        if name not in group["stages"]:
            group["stages"].append(name)
        if status == "INTEGRITY":
            counts.failed += 1
            self.integrity.append({"stage": name, "key": bp.keys[i], "message": error["message"]})
            self.events.append(
                event(
                    "integrity", self.job_id, stage=name, key=bp.keys[i], message=error["message"]
                )
            )
            self.abort = True  # fail fast: an integrity failure means storage is not trustworthy
            return True
        if attempt < self.profile.max_attempts and not self.stop.is_set():
            counts.retried += 1
            delay = self.profile.retry_backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
            self.events.append(
                event(
                    "retry",
                    self.job_id,
                    stage=name,
                    key=bp.keys[i],
                    attempt=attempt,
                    error=error["type"],
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
                "error_type": error["type"],
                "message": error["message"],
                "source": record["source"],
            }
        )
        self.events.append(
            event(
                "batch_failed",
                self.job_id,
                stage=name,
                key=bp.keys[i],
                attempts=attempt,
                error=error["type"],
            )
        )
        return True

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


# Actors kept between jobs of one long-lived driver (the gateway), by what they
# were built from: a job with the same stage code, parameters, resources and
# artifact store reuses them instead of starting new worker processes.
_IDLE: dict[tuple[Any, ...], list[Any]] = {}


def _code_hash(obj: Any) -> str:
    module = sys.modules.get(type(obj).__module__)
    path = getattr(module, "__file__", None)
    try:
        with open(path or "", "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return type(obj).__module__


def _stage_key(spec: Any, artifacts: ArtifactStore, profile: Any) -> tuple[Any, ...]:
    r = spec.resources
    return (
        "stage",
        spec.stage.fingerprint(),
        _code_hash(spec.stage),
        (r.num_cpus, r.num_gpus, r.memory_mb),
        artifacts.root_url,
        json.dumps(artifacts.storage_options, sort_keys=True, default=str),
        profile.artifact_format,
        profile.compression,
    )


def _reader_key(plan: Plan, artifacts: ArtifactStore) -> tuple[Any, ...]:
    profile = plan.profile
    return (
        "read",
        str(plan.pipeline.schema),
        profile.on_bad_record,
        artifacts.root_url,
        json.dumps(profile.storage_options, sort_keys=True, default=str),
    )


def _take_idle(key: tuple[Any, ...], n: int) -> list[Any]:
    idle = _IDLE.pop(key, [])
    for actor in idle[n:]:
        ray.kill(actor, no_restart=True)
    return idle[:n]


def _evict_idle_except(keys: set[tuple[Any, ...]]) -> None:
    """Free the resources idle actors hold unless this job can use them."""
    for key in [k for k in _IDLE if k not in keys]:
        for actor in _IDLE.pop(key):
            ray.kill(actor, no_restart=True)


def release_idle_actors() -> None:
    _evict_idle_except(set())


def _cause(exc: BaseException) -> str:
    text = str(exc)
    return text.strip().splitlines()[-1][:500] if text.strip() else type(exc).__name__
