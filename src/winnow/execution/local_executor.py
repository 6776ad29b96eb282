"""The local executor: every stage runs in this process, without Ray.

For debugging with pdb, notebooks and tiny inputs. The driver loop, the
committer, the retry policy (same backoff), the row accounting and the
checkpoints are the Ray executor's own; only where a stage task runs
differs. Each stage that has work gets one instance (``setup()`` once,
``teardown()`` at the end), running the same ``processing.StageProcessor``
code as a Ray stage actor, and sources are read here with the same
``reading.SourceStreams`` a reader actor runs. One task runs at a time, the
batch furthest along first, so a batch goes through every stage before the
next one starts (while no retry is waiting out its backoff). A task runs in
the driver thread: a timer flags a straggler (``execution.stalls``), but
speculation and ``stall_timeout_s`` do not apply here (there is no second
worker, and a thread cannot be killed).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from winnow.errors import StageFailed, UsageError
from winnow.execution.commit import Event
from winnow.execution.flight import Flight
from winnow.execution.outcome import Outcome, Progress
from winnow.execution.processing import StageProcessor
from winnow.execution.queues import Queues, Task
from winnow.execution.reading import SourceRange, SourceStreams, stream_handle, streams_by_file
from winnow.execution.runner import Runner
from winnow.plan import SKIP, BatchPlan, Plan
from winnow.records import BatchStatus, ErrorRecord, SourceMeta, StageResult
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.state import State


class LocalExecutor:
    """Runs a plan's stages in this process.

    Args:
        address: must be None: there is no cluster to attach to.
        reuse: ignored; nothing outlives the run.
    """

    def __init__(
        self,
        address: str | None = None,
        reuse: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        if address:
            raise UsageError(
                f"the local executor runs every stage in this process: it attaches to no "
                f"cluster (got address {address!r}); drop --address, or use --executor ray"
            )

    def prepare(self, plan: Plan) -> None:
        """Nothing to start or size: stages run here whatever resources they declare."""

    def run(
        self,
        plan: Plan,
        state: State,
        artifacts: ArtifactStore,
        job_id: str,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> Outcome:
        """Run the plan's work with every stage in this process; return the run's outcome."""

        def scheduler(flights: list[Flight], emit: Callable[[Event], None]) -> Queues:
            return InProcessScheduler(flights, plan, artifacts)

        return Runner(plan, state, artifacts, job_id, scheduler, progress, stop).run()

    def shutdown(self) -> None:
        """Nothing to stop: each run tears its stages down itself."""


class LocalInputs:
    """Source batches read in this process.

    One stream per file, as a reader actor keeps them, or a range the first
    stage reads itself (row-group-aligned Parquet).
    """

    def __init__(self, plan: Plan, artifacts: ArtifactStore) -> None:
        profile = plan.profile
        self.plan = plan
        self.reader = SourceStreams(
            artifacts, plan.pipeline.schema, profile.on_bad_record, profile.storage_options
        )
        self.handles: dict[str, str] = {}  # file identity -> its stream

    def open(self, batches: Iterable[BatchPlan]) -> None:
        """Open one stream per source file for the batches that start by reading it."""
        for n, (identity, group) in enumerate(streams_by_file(batches).items()):
            handle = stream_handle(identity, n)
            ranges = [(bp.source.start, bp.source.stop) for bp in group]
            self.reader.open(handle, group[0].source.file, ranges)
            self.handles[identity] = handle

    def first(self, bp: BatchPlan) -> tuple[Any, Any, int | None]:
        """(source meta, batch, None); a read that failed gives its exception as the batch."""
        if bp.source.by_range:
            return None, SourceRange.of(self.plan, bp), None
        return self._read(lambda: self.reader.next(self.handles[bp.source.file.identity]))

    def again(self, bp: BatchPlan) -> tuple[Any, Any, int | None]:
        """Like ``first``, for a retry: the batch's range is read on its own, not from a stream."""
        if bp.source.by_range:
            return None, SourceRange.of(self.plan, bp), None
        src = bp.source
        return self._read(lambda: self.reader.read_one(src.file, src.start, src.stop))

    @staticmethod
    def _read(read: Callable[[], tuple[SourceMeta, Any]]) -> tuple[Any, Any, int | None]:
        try:
            meta, batch = read()
        except Exception as exc:  # fails this batch alone, as a reader actor's task would
            return None, exc, None
        return meta, batch, None


class InProcessScheduler(Queues):
    """The batches of one run, each stage task run in this process in turn."""

    def __init__(self, flights: Iterable[Flight], plan: Plan, artifacts: ArtifactStore) -> None:
        super().__init__(flights, [s.name for s in plan.specs], plan.profile.max_in_flight)
        self.plan = plan
        self.artifacts = artifacts
        self.local_inputs = LocalInputs(plan, artifacts)
        self.stages: dict[int, StageProcessor] = {}

    def start(self) -> None:
        """Set up one instance of each stage that has work, in pipeline order."""
        profile = self.plan.profile
        for i, (spec, active) in enumerate(
            zip(self.plan.specs, self.plan.active_stages(), strict=True)
        ):
            if not active:
                continue
            try:
                self.stages[i] = StageProcessor(
                    spec.stage, self.artifacts, profile.artifact_format, profile.compression
                )
            except Exception as exc:
                raise StageFailed(
                    f"stage {spec.name!r} could not start: its setup() failed: "
                    f"{type(exc).__name__}: {exc}",
                    error_type="SetupFailed",
                ) from exc

    def stop(self, keep: bool) -> None:
        """Tear each stage down; a teardown that fails is reported, not raised.

        What the run committed stays committed.
        """
        for i, processor in self.stages.items():
            try:
                processor.teardown()
            except Exception as exc:
                print(
                    f"note: stage {self.names[i]!r}: teardown() failed: "
                    f"{type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
        self.stages.clear()

    def inputs(self) -> LocalInputs:
        """The source batches of this run, read in this process."""
        return self.local_inputs

    def dispatch(self) -> None:
        """Take the next task, one at a time: the batch furthest along first."""
        if self.outstanding:
            return
        queued = [i for i, queue in self.queues.items() if queue]
        if queued:
            flight = self.queues[max(queued)].popleft()
            self.track(flight.order, Task(flight, 0, None))

    def collect(self, timeout: float) -> Iterator[tuple[Task, StageResult]]:
        """Run the task taken (``timeout`` does not apply: it runs to the end here).

        It runs in the driver thread: a timer flags it once it runs late, but
        it is neither speculated nor abandoned (there is no second worker, and
        a thread cannot be killed).
        """
        while self.outstanding:
            task = self.untrack(next(iter(self.outstanding)))
            timer = self.watchdog.watch_in_driver(self, task) if self.watchdog else None
            try:
                result, task.output = self._run(task.flight)
            finally:
                if timer is not None:
                    timer.cancel()
                    timer.join()  # a flag being raised is done before the result is settled
            yield task, result

    def _run(self, flight: Flight) -> tuple[StageResult, Any]:
        i = flight.stage
        if isinstance(flight.data, Exception):  # its source read failed
            return StageResult(BatchStatus.FAILED, error=ErrorRecord.of(flight.data)), None
        actions = flight.plan.actions
        keep = i + 1 < len(actions) and actions[i + 1] != SKIP  # the next stage reads it
        meta = flight.meta if i == 0 else None
        position = flight.plan.source.file.url, flight.plan.source.start
        context = flight.plan.context if i == 0 else None  # a rejoin batch's
        return self.stages[i].run(flight.data, meta, keep, position, context)
