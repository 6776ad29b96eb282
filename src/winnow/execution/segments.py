"""Running a plan segment by segment: a grouping stage is a barrier between two.

A pipeline without a grouping stage is one segment: the executor runs its
plan once, as ever. With one (see ``winnow.grouping``), the first segment
(the stages up to the grouping stage's map side) runs first; its committed
map checkpoints then plan the second (``partitions.Barrier.plan_next``: one
batch per reduce partition), which the same executor runs through the same
driver loop, committer and retry policy, and so on through each later
grouping or global stage. A segment runs only when every batch of the one
before committed: a partition short of a shard would reduce part of its
rows.
"""

from __future__ import annotations

import threading

from winnow.accounting import Tally
from winnow.execution.executor import Executor
from winnow.execution.outcome import Outcome, Progress, skipped_outcome
from winnow.plan import Plan
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.state import State


def run_segments(
    the_plan: Plan,
    engine: Executor | None,
    state: State,
    artifacts: ArtifactStore,
    job_id: str,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> Outcome:
    """Run every segment of ``the_plan`` with ``engine`` (None: nothing to run); the outcome.

    The outcome's ``finals`` are the last segment's (what the run manifest
    lists), its counts and errors those of every segment, and its row
    accounting follows rows through the barrier (``Tally.after``).
    """
    first = _run(the_plan, engine, state, artifacts, job_id, progress, stop)
    barrier = the_plan.barrier
    if barrier is None:
        return first
    later = barrier.next
    if later is None and not (first.interrupted or stop_set(stop)):
        later = barrier.plan_next(first.finals, artifacts)
    if later is None:  # a map batch failed or the run stopped: no partition can run
        assert first.tally is not None
        first.tally.after = Tally([s.name for s in barrier.specs])
        first.tally.after.rejoin = barrier.rejoin
        first.finals = [None] * len(the_plan.batches)
        return first
    if engine is not None and later.work:
        engine.prepare(later)  # Ray: size the pools for the reduce side's stages
    # The next segment may end at another grouping stage's map side: run on from it.
    second = run_segments(later, engine, state, artifacts, job_id, progress, stop)
    if second.tally is not None:
        second.tally.rejoin = barrier.rejoin
    return _combine(first, second)


def stop_set(stop: threading.Event | None) -> bool:
    """Whether the run was asked to stop."""
    return stop is not None and stop.is_set()


def _run(
    the_plan: Plan,
    engine: Executor | None,
    state: State,
    artifacts: ArtifactStore,
    job_id: str,
    progress: Progress | None,
    stop: threading.Event | None,
) -> Outcome:
    if engine is None or not _own_work(the_plan):
        return skipped_outcome(the_plan, progress)
    return engine.run(the_plan, state, artifacts, job_id, progress, stop)


def _own_work(the_plan: Plan) -> bool:
    return any(bp.first_run < len(the_plan.specs) for bp in the_plan.batches)


def _combine(first: Outcome, second: Outcome) -> Outcome:
    """One outcome from two segments': the second's finals, both segments' counts."""
    errors = {k: dict(v) for k, v in first.errors.items()}
    for kind, group in second.errors.items():
        if kind not in errors:
            errors[kind] = dict(group)
            continue
        errors[kind]["count"] += group["count"]
        errors[kind]["stages"] = [*errors[kind]["stages"], *group["stages"]]
    tally = first.tally
    if tally is not None:
        tally.after = second.tally
    return Outcome(
        {**first.counts, **second.counts},
        second.finals,
        [*first.poisoned, *second.poisoned],
        [*first.integrity, *second.integrity],
        first.interrupted or second.interrupted,
        errors,
        first.storage_failure or second.storage_failure,
        tally,
    )
