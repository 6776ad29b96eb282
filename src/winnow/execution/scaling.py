"""Pool scaling during a run: retire pools no batch needs, grow backlogged ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from winnow.execution.pools import SCALE_EVERY_S, fits_now
from winnow.execution.queues import Queues
from winnow.execution.workers import Workers
from winnow.storage.state import event


class Autoscaler:
    """Retires the pools no batch needs and grows backlogged ones, during a run.

    Every ``SCALE_EVERY_S``: stop the pools of stages no batch will reach
    again (freeing their CPUs/GPUs), and grow a backlogged pool by one actor,
    up to its ``max_actors``, when the cluster has room for it now.

    A long-lived driver (``reuse``) keeps its pools for the next job, so it
    retires none.
    """

    def __init__(
        self,
        workers: Workers,
        job_id: str,
        reuse: bool,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.workers = workers
        self.specs = workers.specs
        self.job_id = job_id
        self.reuse = reuse
        self.emit = emit
        self._last_scale = time.monotonic()

    def tick(self, scheduler: Queues) -> None:
        """Retire and grow the scheduler's pools, at most once per ``SCALE_EVERY_S``."""
        now = time.monotonic()
        if now - self._last_scale < SCALE_EVERY_S:
            return
        self._last_scale = now
        lowest = scheduler.lowest_stage()
        for i, spec in enumerate(self.specs):
            pool = self.workers.pools.get(spec.name)
            if pool is None or not pool.actors:
                continue
            if i < lowest and not self.reuse and pool.live():
                retired = pool.retire()
                self.emit(event("pool_retired", self.job_id, stage=spec.name, actors=retired))
                continue
            backlog = len(scheduler.queues[i]) > 0 and pool.pick() is None
            if (
                backlog
                and len(pool.actors) < spec.resources.max_actors
                and not pool.starting()
                and fits_now(spec.resources)
            ):
                size = self.workers.grow(spec)
                self.emit(event("pool_grown", self.job_id, stage=spec.name, actors=size))
