"""Every actor of one job: its stage pools and its source readers."""

from __future__ import annotations

import contextlib
from typing import Any

import ray

from winnow.execution.cluster import register_pipeline_code
from winnow.execution.inputs import SourceInputs
from winnow.execution.pools import (
    IDLE,
    Pool,
    create_actor,
    evict_idle_except,
    reader_key,
    stage_key,
    start_pools,
    take_idle,
)
from winnow.pipeline import StageSpec
from winnow.plan import Plan
from winnow.storage.artifacts import ArtifactStore

TEARDOWN_S = 10.0  # how long a job waits, in all, for its stage actors' teardown()


class Workers:
    """The actors of one job, started once and stopped (or kept) once.

    ``start`` creates each stage's pool at the size the cluster was sized
    for before the run (``cluster.size_pools``, called once per run) and the
    reader actors; ``stop`` kills them, or, in a long-lived driver (the
    gateway, ``reuse``), keeps them idle for the next job built from the same
    stages.
    """

    def __init__(self, plan: Plan, artifacts: ArtifactStore, job_id: str, reuse: bool) -> None:
        self.plan = plan
        self.specs = plan.specs
        self.artifacts = artifacts
        self.job_id = job_id
        self.reuse = reuse
        self.pools: dict[str, Pool] = {}
        self.inputs: SourceInputs | None = None
        self._keys: dict[str, tuple[Any, ...]] = {}  # what each pool's actors were built from

    @property
    def readers(self) -> SourceInputs:
        """The source readers (and how a batch reaches the first stage)."""
        if self.inputs is None:
            raise RuntimeError("the job's actors were not started")
        return self.inputs

    def start(self, sizes: dict[str, int]) -> dict[str, int]:
        """Start every pool (reusing idle actors where allowed) and the readers.

        Returns how many optional actors per stage the cluster could not place.
        """
        profile = self.plan.profile
        register_pipeline_code(self.specs)
        wanted = {spec.name: stage_key(spec, self.artifacts, profile) for spec in self.specs}
        readers_key = reader_key(self.plan, self.artifacts)
        if self.reuse:
            evict_idle_except({*wanted.values(), readers_key})
        self._keys.update(wanted)
        idle = {
            s.name: take_idle(wanted[s.name], sizes.get(s.name, 0)) if self.reuse else []
            for s in self.specs
        }
        starting = start_pools(self.specs, sizes, idle, self.job_id, self.artifacts, profile)
        self._keys["read"] = readers_key
        self.inputs = SourceInputs(
            self.plan, self.artifacts, self.job_id, readers_key if self.reuse else None
        )
        self.pools, dropped = starting.wait()
        return dropped

    def grow(self, spec: StageSpec) -> int:
        """Add one actor to a stage's pool; return the pool's new size."""
        pool = self.pools[spec.name]
        pool.add(
            create_actor(spec, len(pool.actors), self.job_id, self.artifacts, self.plan.profile)
        )
        return len(pool.actors)

    def stop(self, keep: bool) -> None:
        """Kill every actor, or with ``keep`` (and ``reuse``) leave them idle for the next job.

        A stage actor that is killed runs its stage's ``teardown()`` first (as the
        local executor does), waited for up to ``TEARDOWN_S`` in all.
        """
        keep = keep and self.reuse
        groups = [
            *((n, p.actors) for n, p in self.pools.items()),
            ("read", self.inputs.readers if self.inputs is not None else []),
        ]
        for name, actors in groups:
            if keep and actors:
                IDLE.setdefault(self._keys[name], []).extend(actors)
                continue
            if name != "read":
                _tear_down(actors)
            for actor in actors:
                ray.kill(actor, no_restart=True)


def _tear_down(actors: list[Any]) -> None:
    """Ask each stage actor to run its teardown; a dead or stuck one is not waited for."""
    calls = []
    for actor in actors:
        with contextlib.suppress(Exception):  # an actor already gone takes no call
            calls.append(actor.shutdown.remote())
    if calls:
        ray.wait(calls, num_returns=len(calls), timeout=TEARDOWN_S)
