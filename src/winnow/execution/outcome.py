"""What a run produced, and the skip accounting that needs no Ray.

A rerun where every batch is skipped never starts (or imports) Ray: its
outcome comes from the plan alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from winnow.accounting import Tally, row_counts
from winnow.plan import SKIP, Plan


@dataclass
class StageCounts:
    """One stage's totals over a run: batches by fate, rows, bytes and busy time.

    ``straggled`` counts batches flagged as stragglers, ``speculated`` the
    second attempts sent for them, ``abandoned`` the attempts given up past
    ``stall_timeout_s`` (``execution.stalls``).
    """

    run: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    rows_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    bad_records: int = 0
    busy_s: float = 0.0
    straggled: int = 0
    speculated: int = 0
    abandoned: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The counts as a plain dict, keyed by field name."""
        return dict(vars(self))


@dataclass
class Outcome:
    """What a run produced.

    Attributes:
        counts: per stage, its totals.
        finals: per batch in plan order, the last stage's checkpoint record
            (None where the batch did not finish).
        poisoned: error records of batches that used up their retries.
        integrity: records of artifacts that failed verification.
        interrupted: the run was stopped before it finished.
        errors: per error type, how many failures, one example and the stages
            it was seen at.
        storage_failure: why a store refused writes for good; the job stopped.
        tally: where every input row went.
    """

    counts: dict[str, StageCounts]
    finals: list[dict[str, Any] | None]
    poisoned: list[dict[str, Any]]
    integrity: list[dict[str, Any]]
    interrupted: bool
    errors: dict[str, dict[str, Any]]
    storage_failure: str | None = None  # a store refused writes for good; the job stopped
    tally: Tally | None = None  # where every input row went


class Progress:
    """What the runner reports to a display; the default shows nothing."""

    def start(self, totals: dict[str, int], done: dict[str, int]) -> None:
        """The run starts: ``totals`` batches per stage, ``done`` of them already committed."""

    def advance(self, stage: str, rows: int) -> None:
        """One batch of ``stage`` finished with ``rows`` rows out."""

    def straggling(self, stage: str, count: int) -> None:
        """``count`` batches of ``stage`` now run far past its normal latency (0: none)."""

    def stop(self) -> None:
        """The run ended (finished, failed or stopped)."""


def count_skips(
    plan: Plan,
    counts: dict[str, StageCounts],
    finals: list[dict[str, Any] | None],
    tally: Tally | None = None,
) -> dict[str, int]:
    """Count the skipped (stage, batch) pairs of a plan.

    Also fills in the finals committed before, and accounts the rows of every
    batch no stage runs.

    Returns:
        Batches already done per stage (for the progress display).
    """
    names = [s.name for s in plan.specs]
    done = dict.fromkeys(names, 0)
    for order, bp in enumerate(plan.batches):
        for i, name in enumerate(names):
            if bp.actions[i] != SKIP:
                continue
            c = counts[name]
            c.skipped += 1
            rec = bp.prior[i]
            if rec:
                c.rows_in += rec.get("rows_in", 0)
                c.rows_out += rec.get("rows_out", 0)
                c.bad_records += rec.get("bad_records", 0)
            done[name] += 1
        if bp.first_run >= len(names):
            finals[order] = bp.prior[-1]
            if tally is not None:
                src = bp.source
                tally.add_batch(
                    src.file.url, src.start, src.stop, [row_counts(r) for r in bp.prior]
                )
    return done


def skipped_outcome(plan: Plan, progress: Progress | None = None) -> Outcome:
    """The outcome of a run with nothing to do."""
    names = [s.name for s in plan.specs]
    counts = {n: StageCounts() for n in names}
    finals: list[dict[str, Any] | None] = [None] * len(plan.batches)
    tally = Tally(names)
    done = count_skips(plan, counts, finals, tally)
    if progress is not None:
        progress.start(done, done)
        progress.stop()
    return Outcome(counts, finals, [], [], False, {}, tally=tally)
