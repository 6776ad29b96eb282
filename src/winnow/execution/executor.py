"""The executor seam: what runs a plan's work, looked up by name.

``api.execute`` asks an executor to prepare (start or attach, size) before
anything of the job is written, to run the plan's work, and to shut down.
Two implementations share the driver loop (``runner.Runner``), the
committer, the retry policy and the row accounting, and differ only in where
a stage task runs:

* ``ray`` (``ray_executor.RayExecutor``): actor pools on an embedded or
  attached Ray cluster;
* ``local`` (``local_executor.LocalExecutor``): in this process, one stage
  instance per stage, without importing Ray: for pdb, notebooks and tiny
  inputs.

An executor's module is imported only when one is made, so naming ``local``
never imports Ray.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Protocol

from winnow.errors import UsageError
from winnow.execution.outcome import Outcome, Progress
from winnow.plan import Plan
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.state import State

# name -> (module, class), imported lazily
EXECUTORS = {
    "ray": ("winnow.execution.ray_executor", "RayExecutor"),
    "local": ("winnow.execution.local_executor", "LocalExecutor"),
}
DEFAULT_EXECUTOR = "ray"


class Executor(Protocol):
    """Runs a plan's work: prepared once, run once, shut down once."""

    def prepare(self, plan: Plan) -> None:
        """Start or attach to what runs the stages and size it for ``plan``.

        Called before anything of the job is written.

        Raises:
            UsageError: the executor cannot be reached or cannot host the
                plan's stages (the run exits 2 having written nothing).
        """

    def run(
        self,
        plan: Plan,
        state: State,
        artifacts: ArtifactStore,
        job_id: str,
        progress: Progress | None,
        stop: threading.Event | None,
    ) -> Outcome:
        """Run the plan's work to the end (or until ``stop`` is set); its outcome."""

    def shutdown(self) -> None:
        """Stop or detach from what ``prepare`` started; safe to call more than once."""


def check_executor(name: str) -> str:
    """``name`` if it names an executor.

    Raises:
        UsageError: no executor has that name.
    """
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}: choose one of {', '.join(sorted(EXECUTORS))}")
    return name


def executor_for(
    name: str,
    address: str | None = None,
    reuse: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Executor:
    """A new executor of kind ``name``.

    Args:
        name: ``ray`` or ``local``.
        address: the Ray cluster to attach to (``ray`` only; None starts an
            embedded Ray or uses ``RAY_ADDRESS``).
        reuse: keep workers for the next job of this process (the gateway;
            ``ray`` only).
        notify: where an executor tells the user something (the Ray
            dashboard's URL).

    Raises:
        UsageError: no executor has that name, or it does not take ``address``.
    """
    module, cls = EXECUTORS[check_executor(name)]
    executor: Executor = getattr(importlib.import_module(module), cls)(address, reuse, notify)
    return executor
