"""Stage actor pools.

Load per actor, actors lost and probed back, and actors kept warm between
jobs of one long-lived driver (the gateway).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from winnow.errors import StageFailed
from winnow.execution.actors import StageWorker
from winnow.plan import Plan
from winnow.stage import Resources
from winnow.storage.artifacts import ArtifactStore

READY_TIMEOUT_S = 300.0
OPTIONAL_GRACE_S = 30.0  # how long a pool waits for actors beyond min_actors
MAX_PER_ACTOR = 2  # tasks queued on one actor: one running, one waiting
PROBE_EVERY_S = 1.0
SCALE_EVERY_S = 1.0  # how often pools are grown or retired (one GCS call each time)


class Pool:
    """One stage's actors.

    An actor whose task died gets no work until a ``ready`` probe answers
    (Ray restarted it, here or on another node); a probe that fails is sent
    again a second later. An actor that never answers (restarts ran out, or no
    node can host it) simply gets no more work; the rest of the pool carries
    on, and the runner fails the job if a stage is left with no live actor
    for too long.
    """

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.load = [0] * len(actors)
        self.down: dict[int, tuple[Any, float]] = {}  # index -> (probe ref or None, next probe)

    def pick(self, avoid: set[int] | None = None) -> int | None:
        """The least-loaded live actor with room (not one in ``avoid``), or None."""
        avoid = avoid or set()
        free = [i for i in range(len(self.actors)) if i not in self.down and i not in avoid]
        free = [i for i in free if self.load[i] < MAX_PER_ACTOR]
        return min(free, key=self.load.__getitem__) if free else None

    def any_live(self) -> int:
        """A random live actor (any actor when none is known to be live)."""
        live = [i for i in range(len(self.actors)) if i not in self.down]
        return random.choice(live or list(range(len(self.actors))))

    def live(self) -> int:
        """How many actors are not known to be down."""
        return len(self.actors) - len(self.down)

    def add(self, actor: Any) -> None:
        """A new actor: it gets work once its ``ready`` probe answers."""
        self.actors.append(actor)
        self.load.append(0)
        self.down[len(self.actors) - 1] = (actor.ready.remote(), 0.0)

    def starting(self) -> bool:
        """Whether some actor's first (or repeat) ``ready`` probe is still in flight."""
        return any(ref is not None for ref, _ in self.down.values())

    def retire(self) -> int:
        """Stop every actor (the stage has no work left); return how many were live."""
        live = self.live()
        for idx, actor in enumerate(self.actors):
            ray.kill(actor, no_restart=True)
            self.down[idx] = (None, float("inf"))
        return live

    def lost(self, idx: int) -> None:
        """Take actor ``idx`` out of service until a ``ready`` probe answers."""
        if idx not in self.down:
            self.down[idx] = (self.actors[idx].ready.remote(), 0.0)

    def check(self) -> None:
        """Poll the down actors' ``ready`` probes without waiting.

        Those that answer are back in service; a probe that failed is sent
        again after ``PROBE_EVERY_S``.
        """
        if not self.down:
            return
        now = time.monotonic()
        for idx, (ref, when) in list(self.down.items()):
            if ref is None and now >= when:
                self.down[idx] = (self.actors[idx].ready.remote(), 0.0)
        probes = {ref: i for i, (ref, _) in self.down.items() if ref is not None}
        ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=0)
        for ref in ready:
            idx = probes[ref]
            try:
                ray.get(ref)
            except RayActorError:
                self.down[idx] = (None, now + PROBE_EVERY_S)
            else:
                del self.down[idx]


# Actors kept between jobs of one long-lived driver (the gateway), by what they
# were built from: a job with the same stage code, parameters, resources and
# artifact store reuses them instead of starting new worker processes.
IDLE: dict[tuple[Any, ...], list[Any]] = {}


def _code_hash(obj: Any) -> str:
    module = sys.modules.get(type(obj).__module__)
    path = getattr(module, "__file__", None)
    try:
        with open(path or "", "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return type(obj).__module__


def stage_key(spec: Any, artifacts: ArtifactStore, profile: Any) -> tuple[Any, ...]:
    """The key under which a stage's idle actors are kept between jobs.

    Actors built from the same stage code, parameters, resources, artifact
    store and artifact format are interchangeable.
    """
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


def reader_key(plan: Plan, artifacts: ArtifactStore) -> tuple[Any, ...]:
    """The key under which idle reader actors are kept: schema, bad-record policy, storage."""
    profile = plan.profile
    return (
        "read",
        str(plan.pipeline.schema),
        profile.on_bad_record,
        artifacts.root_url,
        json.dumps(profile.storage_options, sort_keys=True, default=str),
    )


def take_idle(key: tuple[Any, ...], n: int) -> list[Any]:
    """Take up to ``n`` idle actors kept under ``key``; the rest are killed."""
    idle = IDLE.pop(key, [])
    for actor in idle[n:]:
        ray.kill(actor, no_restart=True)
    return idle[:n]


def evict_idle_except(keys: set[tuple[Any, ...]]) -> None:
    """Free the resources idle actors hold unless this job can use them."""
    for key in [k for k in IDLE if k not in keys]:
        for actor in IDLE.pop(key):
            ray.kill(actor, no_restart=True)


class Starting:
    """Stage actors being started.

    The required ones (each stage's first ``min_actors``) must come up; the
    optional rest get a grace period and those the cluster cannot place are
    dropped.
    """

    def __init__(self) -> None:
        self.pools: dict[str, list[Any]] = {}
        self.required: list[tuple[str, Any]] = []
        self.optional: list[tuple[str, Any]] = []

    def wait(self) -> tuple[dict[str, Pool], dict[str, int]]:
        """Wait for the actors to come up.

        Every required actor must answer ``ready`` within ``READY_TIMEOUT_S``; the
        optional ones get ``OPTIONAL_GRACE_S`` and those not up by then are killed.

        Returns:
            The pools of the actors that came up, and per stage how many optional
            actors were dropped.

        Raises:
            StageFailed: a stage's ``setup()`` failed, or a required actor could not
                be placed in time.
        """
        for name, actor in self.required:
            wait_ready(name, actor.ready.remote(), READY_TIMEOUT_S)
        dropped: dict[str, int] = {}
        unplaced: list[Any] = []
        if self.optional:
            refs = {a.ready.remote(): (name, a) for name, a in self.optional}
            done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=OPTIONAL_GRACE_S)
            for ref in done:
                wait_ready(refs[ref][0], ref, 0)  # a setup() failure still fails fast
            for ref in pending:
                name, actor = refs[ref]
                ray.kill(actor, no_restart=True)
                unplaced.append(actor)
                dropped[name] = dropped.get(name, 0) + 1
        if dropped:
            note = ", ".join(f"{n}: {k} fewer" for n, k in dropped.items())
            print(
                f"note: the cluster could not place every actor within {OPTIONAL_GRACE_S:.0f}s "
                f"({note}); running with the rest",
                file=sys.stderr,
            )
        pools = {
            n: Pool([a for a in actors if a not in unplaced]) for n, actors in self.pools.items()
        }
        return pools, dropped


def create_actor(spec: Any, i: int, job_id: str, artifacts: ArtifactStore, profile: Any) -> Any:
    """Create actor ``i`` of a stage's pool, named after the job, with the stage's resources."""
    r = spec.resources
    worker: Any = ray.remote(StageWorker)
    return worker.options(
        name=f"winnow:{job_id}:{spec.name}:{i}",
        num_cpus=r.num_cpus,
        num_gpus=r.num_gpus,
        memory=r.memory_mb * 1024 * 1024 if r.memory_mb else None,
        max_restarts=3,
        max_task_retries=0,
        # One stage's actors go to different nodes where they can.
        scheduling_strategy="SPREAD",
    ).remote(spec.stage, artifacts, profile.artifact_format, profile.compression)


def fits_now(resources: Resources) -> bool:
    """Whether the cluster has room for one more actor with this request right now."""
    free: dict[str, float] = ray.available_resources()
    return (
        free.get("CPU", 0.0) + 1e-9 >= resources.num_cpus
        and free.get("GPU", 0.0) + 1e-9 >= resources.num_gpus
        and free.get("memory", 0.0) + 1 >= resources.memory_mb * 1024 * 1024
    )


def start_pools(
    specs: list[Any],
    sizes: dict[str, int],
    idle: dict[str, list[Any]],
    job_id: str,
    artifacts: ArtifactStore,
    profile: Any,
) -> Starting:
    """Create every stage's actors, taking over ``idle`` ones first.

    Required ones first, GPU stages before the rest, so a node's CPUs go to
    the actors that can only run there.
    """

    def create(spec: Any, i: int) -> Any:
        return create_actor(spec, i, job_id, artifacts, profile)

    out = Starting()
    by_scarcity = sorted(specs, key=lambda s: -s.resources.num_gpus)
    for spec in by_scarcity:
        actors = out.pools[spec.name] = list(idle.get(spec.name, []))
        want = min(spec.resources.min_actors, sizes.get(spec.name, 0))
        out.required += [(spec.name, a) for a in actors[:want]]
        out.optional += [(spec.name, a) for a in actors[want:]]
        while len(actors) < want:
            actors.append(create(spec, len(actors)))
            out.required.append((spec.name, actors[-1]))
    for spec in by_scarcity:
        actors = out.pools[spec.name]
        while len(actors) < sizes.get(spec.name, 0):
            actors.append(create(spec, len(actors)))
            out.optional.append((spec.name, actors[-1]))
    return out


def wait_ready(name: str, ref: Any, timeout: float) -> None:
    """Wait for one actor's ``ready`` probe ``ref``.

    Raises:
        StageFailed: the actor died (its stage's ``setup()`` failed), or it did
            not answer within ``timeout`` seconds (the cluster cannot place it).
    """
    try:
        ray.get(ref, timeout=timeout)
    except RayActorError as exc:
        raise StageFailed(
            f"stage {name!r} could not start: its setup() failed: {short_cause(exc)}",
            error_type="SetupFailed",
        ) from None
    except GetTimeoutError:
        raise StageFailed(
            f"stage {name!r}: no actor started within {timeout:.0f}s; the cluster "
            "cannot place its resource request (see `winnow plan`)",
            error_type="Unschedulable",
        ) from None


def short_cause(exc: BaseException) -> str:
    """The last line of an exception's text (500 characters at most), or its type's name."""
    text = str(exc)
    return text.strip().splitlines()[-1][:500] if text.strip() else type(exc).__name__
