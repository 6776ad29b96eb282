"""The Ray executor: stage actor pools on an embedded or attached Ray cluster."""

from __future__ import annotations

import threading
from collections.abc import Callable

from winnow.execution import cluster
from winnow.execution.commit import Event
from winnow.execution.flight import Flight
from winnow.execution.outcome import Outcome, Progress
from winnow.execution.runner import Runner
from winnow.execution.schedule import Scheduler
from winnow.plan import Plan
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.state import State


class RayExecutor:
    """Runs a plan's stages in Ray actor pools, sized once per run.

    Args:
        address: the cluster to attach to (None: ``RAY_ADDRESS``, or an
            embedded Ray this executor starts and stops).
        reuse: keep the actors idle for the next job of this process (the
            gateway).
        notify: where the dashboard's URL is told (the CLI prints it).
    """

    def __init__(
        self,
        address: str | None = None,
        reuse: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.address = address
        self.reuse = reuse
        self.notify = notify
        self.sizes: dict[str, int] = {}
        self._started = False  # this executor started (or attached to) Ray

    def prepare(self, plan: Plan) -> None:
        """Attach to Ray and size the pools, once per run.

        A wrong address or a request the cluster can never host exits 2
        before anything is written.
        """
        profile = plan.profile
        # A second segment (a grouping stage's reduce side) prepares again on the same Ray.
        started = cluster.connect(self.address, profile.ray_num_cpus, profile.ray_dashboard)
        self._started = self._started or started
        url = cluster.dashboard_url()
        if url and self.notify is not None:
            self.notify(f"Ray dashboard: {url}")
        try:
            self.sizes = cluster.size_pools(plan.specs, plan.active_stages())
        except BaseException:
            self.shutdown()
            raise

    def run(
        self,
        plan: Plan,
        state: State,
        artifacts: ArtifactStore,
        job_id: str,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> Outcome:
        """Run the plan's work on the Ray actors sized by ``prepare``; return the run's outcome."""

        def scheduler(flights: list[Flight], emit: Callable[[Event], None]) -> Scheduler:
            return Scheduler(flights, plan, artifacts, job_id, self.sizes, self.reuse, emit)

        outcome = Runner(plan, state, artifacts, job_id, scheduler, progress, stop).run()
        logs = cluster.worker_logs()
        if logs and (outcome.errors or outcome.poisoned) and self.notify is not None:
            self.notify(f"what the stage actors printed (worker-*.out, worker-*.err) is in {logs}")
        return outcome

    def shutdown(self) -> None:
        """Shut down the Ray this executor started; a cluster it attached to is left alone."""
        if self._started:
            self._started = False
            cluster.shutdown()
