"""Planning: which (stage, batch) pairs will run, be skipped or be retried, and why.

Planning reads the state (checkpoint segments, one listing per stage, and one
listing of the artifact store) but never starts Ray, so ``winnow plan`` and an
all-skipped rerun cost seconds even for 100,000 batches.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from winnow import sources
from winnow.batches import map_threads, source_batches
from winnow.errors import ConfigError
from winnow.grouping import GroupingStage, expand, split_specs
from winnow.history import History, source_change, stage_change
from winnow.pipeline import Pipeline, StageSpec
from winnow.profile import Profile
from winnow.records import BatchStatus, record_artifacts
from winnow.stage import fingerprint_of
from winnow.storage.artifacts import ArtifactRef, ArtifactStore, Fault
from winnow.storage.state import State

if TYPE_CHECKING:
    from winnow.partitions import Barrier

SKIP, RUN, RETRY = "skip", "run", "retry"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class BatchPlan:
    """One source batch's path through the stages.

    ``prior`` holds, per stage, its checkpoint before the run (None: none),
    with only the fields planning and the outcome read (``records.SUMMARY_FIELDS``).
    """

    source: sources.SourceBatch
    keys: list[str]
    actions: list[str]
    reasons: list[str]
    prior: list[dict[str, Any] | None]
    shards: list[dict[str, Any]] | None = None  # a reduce partition's input, not a source read
    context: list[dict[str, Any]] | None = None  # a rejoin batch's context artifacts

    @property
    def first_run(self) -> int:
        """Index of the first stage that must run, or the stage count if none."""
        for i, action in enumerate(self.actions):
            if action != SKIP:
                return i
        return len(self.actions)


@dataclass
class StagePlan:
    """One stage in a plan.

    Its fingerprint (and the parts it hashes), and how many batches it will
    run, skip or retry, by action and by reason.
    """

    name: str
    fingerprint: str
    parts: dict[str, Any] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class Plan:
    """What a run will do: per (stage, batch) run, skip or retry, and why.

    Attributes:
        pipeline: the pipeline planned.
        profile: the resolved profile.
        specs: the enabled stages with their resources, in order.
        files: the input files discovered.
        batches: one ``BatchPlan`` per source batch, in source order.
        stages: one ``StagePlan`` per stage.
        before: per stage, its checkpoints by status before the run.
        reader: the source reader's fingerprint.
        damage: checkpoint lines skipped as damaged (their batches rerun).
    """

    pipeline: Pipeline
    profile: Profile
    specs: list[StageSpec]
    files: list[sources.SourceFile]
    batches: list[BatchPlan]
    stages: list[StagePlan]
    before: dict[str, dict[str, int]]
    reader: str = ""
    damage: list[str] = field(default_factory=list)  # checkpoint lines skipped as damaged
    barrier: Barrier | None = None  # a grouping stage's reduce side and what follows it

    @property
    def work(self) -> int:
        """How many batches (and reduce partitions) have any stage to run (0: no executor)."""
        own = sum(1 for b in self.batches if b.first_run < len(self.specs))
        later = self.barrier.next if self.barrier is not None else None
        return own + (later.work if later is not None else 0)

    def segments(self) -> list[Plan]:
        """This plan, then its reduce side's once planned (see ``partitions``)."""
        later = self.barrier.next if self.barrier is not None else None
        return [self] if later is None else [self, *later.segments()]

    def barriers(self) -> list[Barrier]:
        """The plan's grouping stages' barriers, in pipeline order."""
        return self.barrier.chain() if self.barrier is not None else []

    def all_stages(self) -> list[StagePlan]:
        """Every stage of the pipeline as planned, each grouping stage's two sides included."""
        return self.stages + [s for b in self.barriers() for s in b.stages]

    def all_specs(self) -> list[StageSpec]:
        """Every stage's spec, each grouping stage's two sides included."""
        return self.specs + [s for b in self.barriers() for s in b.specs]

    def active_stages(self) -> list[bool]:
        """Per stage: whether any batch runs it (only those get actors)."""
        return [any(b.actions[i] != SKIP for b in self.batches) for i in range(len(self.specs))]

    def to_dict(self) -> dict[str, Any]:
        """What ``winnow plan --json`` prints: per stage run, retry, skip and why.

        A grouping stage shows as its two sides; until its map side has
        committed, its reduce side (and what follows) is "pending upstream".
        """
        out: dict[str, Any] = {
            "pipeline": self.pipeline.name,
            "profile": self.profile.name,
            "files": len(self.files),
            "batches": len(self.batches),
            "stages": _stage_rows(self.stages, self.specs),
            "state_before": self.before,
        }
        if self.barrier is not None:
            later = self.barrier.next
            if later is None:
                pending = f"pending upstream: planned once {self.specs[-1].name} commits"
                rows = [r for b in self.barriers() for r in _stage_rows(b.stages, b.specs)]
                for row in rows:
                    row["reasons"] = {pending: 1}
                    row["pending"] = True
            else:
                rows = later.to_dict()["stages"]
            out["stages"] += rows
            from winnow.partitions import groupings, rejoins

            out["groupings"] = groupings(self)
            if out["groupings"]:
                out["grouping"] = out["groupings"][0]
            if rejoined := rejoins(self):
                out["rejoins"] = rejoined
        return out


def _stage_rows(stages: list[StagePlan], specs: list[StageSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "fingerprint": s.fingerprint,
            "run": s.counts[RUN],
            "retry": s.counts[RETRY],
            "skip": s.counts[SKIP],
            "reasons": dict(s.reasons),
            "resources": vars(spec.resources),
        }
        for s, spec in zip(stages, specs, strict=True)
    ]


def chain_key(fingerprint: str, input_key: str) -> str:
    """A stage's batch key: SHA-256 of its fingerprint and its input batch's key."""
    return hashlib.sha256(f"{fingerprint}|{input_key}".encode()).hexdigest()


def make_plan(
    pipeline: Pipeline,
    profile: Profile,
    inputs: list[str],
    state: State,
    artifacts: ArtifactStore,
    verify: str | None = None,
    history: History | None = None,
    only_failed: bool = False,
    rerun: str | None = None,
    files: list[sources.SourceFile] | None = None,
) -> Plan:
    """Decide run/skip/retry for every (stage, batch), reading state only.

    ``only_failed`` keeps just the batches with a FAILED checkpoint at some
    stage (``winnow retry --failed``). ``rerun`` names a stage that, with
    every stage after it, recomputes every batch (``--rerun STAGE``).
    ``files``: the input files when already known (data in memory committed
    as chunks, in row order); ``inputs`` is then not discovered.
    """
    if files is None:
        files = sources.discover(inputs, profile.storage_options)
    stages = profile.apply(pipeline)
    if any(isinstance(spec.stage, GroupingStage) for spec in stages):
        from winnow.partitions import input_bytes, size_partitions

        stages = size_partitions(stages, input_bytes(files), profile.partition_mb)
    specs, after = split_specs(stages)
    every_spec = expand(stages)
    forced = None if rerun is None else _rerun_index(pipeline, every_spec, rerun)
    batches = source_batches(files, state, profile, pipeline)
    store = state.checkpoints()
    stage_checkpoints = {spec.name: store.load(spec.name, summary=True) for spec in every_spec}
    loaded = {name: sc.records for name, sc in stage_checkpoints.items()}
    damage = [str(d) for sc in stage_checkpoints.values() for d in sc.damage]
    before = {
        spec.name: dict(Counter(r["status"] for r in loaded[spec.name].values())) for spec in specs
    }
    sizes = artifacts.sizes() if any(loaded.values()) else {}
    reader = sources.reader_fingerprint(pipeline.schema, profile.on_bad_record)
    decider = Decider(
        specs, profile, history or History(), loaded, artifacts, sizes, reader, forced
    )
    plans = [decider.batch(sb) for sb in batches]
    every = plans
    if only_failed:
        plans = [bp for bp in plans if RETRY in bp.actions]
    verify = verify or profile.verify
    if verify == "full":
        verify_skips(plans, artifacts)
    count_actions(plans, decider.stages)
    the_plan = Plan(
        pipeline, profile, specs, files, plans, decider.stages, before, decider.reader, damage
    )
    if after is not None:
        from winnow.partitions import make_barrier

        later = forced - len(specs) if forced is not None else None
        the_plan.barrier = make_barrier(
            pipeline,
            profile,
            after,
            history or History(),
            loaded,
            artifacts,
            reader,
            None if later is None else max(later, 0),
            verify,
            [bp.source for bp in every],
        )
        if not any(bp.first_run < len(specs) for bp in every):
            the_plan.barrier.plan_next([bp.prior[-1] for bp in every], artifacts, sizes)
    return the_plan


def count_actions(plans: list[BatchPlan], stages: list[StagePlan]) -> None:
    """Count each stage's actions and reasons over ``plans`` into its ``StagePlan``."""
    for bp in plans:
        for i, sp in enumerate(stages):
            sp.counts[bp.actions[i]] += 1
            sp.reasons[bp.reasons[i]] += 1


class Decider:
    """Decides, batch by batch, what each stage does, and why.

    ``partitions.PartitionDecider`` decides the same for a grouping stage's
    reduce partitions.

    Args:
        specs: the enabled stages, in order.
        profile: the resolved profile (batch size, for the reasons).
        history: what the last run of this pipeline recorded.
        loaded: per stage, its latest checkpoint record by key (``records.SUMMARY_FIELDS``).
        artifacts: the output store, to check a committed artifact before a skip.
        sizes: the store's artifact sizes by digest (one listing for the plan).
        reader: the source reader's fingerprint.
        forced: the index of the ``--rerun`` stage, if any.
    """

    def __init__(
        self,
        specs: list[StageSpec],
        profile: Profile,
        history: History,
        loaded: dict[str, dict[str, dict[str, Any]]],
        artifacts: ArtifactStore,
        sizes: dict[str, int],
        reader: str,
        forced: int | None,
    ) -> None:
        self.specs = specs
        self.profile = profile
        self.history = history
        self.loaded = loaded
        self.artifacts = artifacts
        self.sizes = sizes
        self.reader = reader
        self.forced = forced
        self.stages: list[StagePlan] = []
        self.changes: list[str | None] = []  # per stage: how its fingerprint changed, if it did
        for spec in specs:
            parts = spec.stage.fingerprint_parts()
            fp = fingerprint_of(parts)
            self.changes.append(stage_change(spec.name, history.stages.get(spec.name), parts, fp))
            self.stages.append(StagePlan(spec.name, fp, parts))

    def batch(self, sb: sources.SourceBatch) -> BatchPlan:
        """One source batch's keys, actions, reasons and prior checkpoints, stage by stage."""
        key = sb.key
        keys, actions, reasons, prior = [], [], [], []
        first_new: int | None = None
        invalidated: str | None = None
        for i, spec in enumerate(self.specs):
            key = chain_key(self.stages[i].fingerprint, key)
            rec = self.loaded[spec.name].get(key)
            if rec is not None:
                key = rec["key"]  # the same string, held once (a rerun of 100k batches: ~22 MB)
            elif first_new is None:
                first_new = i
            why_new = "" if rec is not None else self._why_new(i, first_new or 0, sb)
            action, reason = _decide(rec, self.artifacts, self.sizes, why_new)
            if self.forced is not None and i >= self.forced and action == SKIP:
                action, reason = RUN, f"--rerun {self.specs[self.forced].name}"
            elif invalidated is not None and action == SKIP:
                # Its input is being recomputed because it was wrong: so is its output.
                action, reason = RUN, f"upstream stage {invalidated} invalidated"
            if rec is not None and rec["status"] == BatchStatus.INVALIDATED and invalidated is None:
                invalidated = spec.name
            keys.append(key)
            actions.append(action)
            reasons.append(reason)
            prior.append(rec)
        return BatchPlan(sb, keys, actions, reasons, prior)

    def _why_new(self, i: int, first_new: int, sb: sources.SourceBatch) -> str:
        """Why stage ``i`` of a batch has no checkpoint under its key (asked only if it has none)."""
        changes, profile, history = self.changes, self.profile, self.history
        if first_new == i:
            if changes[i]:
                return str(changes[i])
            if i == 0:
                return source_change(sb, history, profile.batch_rows, self.reader)
            return "new batch"
        if first_new == 0 and not changes[0]:
            return source_change(sb, history, profile.batch_rows, self.reader)
        return f"upstream stage {self.specs[first_new].name} changed"


def _rerun_index(pipeline: Pipeline, specs: list[StageSpec], rerun: str) -> int:
    pipeline.stage_index(rerun)  # names the stages when there is no such one
    names = [s.name for s in specs]
    if f"{rerun}.map" in names:  # a grouping stage: rerun from its map side
        return names.index(f"{rerun}.map")
    if rerun not in names:
        raise ConfigError(
            f"--rerun {rerun!r}: the profile disables that stage; enable it or pick another"
        )
    return names.index(rerun)


_QUICK_REASONS = {Fault.MISSING: "missing", Fault.WRONG_SIZE: "size differs from checkpoint"}


def _decide(
    rec: dict[str, Any] | None, artifacts: ArtifactStore, sizes: dict[str, int], new_reason: str
) -> tuple[str, str]:
    if rec is None:
        return RUN, new_reason
    status = rec["status"]
    if status == BatchStatus.SUCCEEDED:
        for what, art in record_artifacts(rec):
            if art is None or artifacts.listed(art, sizes):
                continue
            problem = artifacts.check(ArtifactRef(**art), listing=sizes)
            if problem is not None:
                return RUN, f"{what} {_QUICK_REASONS[problem.fault]}"
        return SKIP, "committed"
    if status == BatchStatus.FAILED:
        err = (rec.get("error") or {}).get("type", "error")
        return RETRY, f"failed before ({err}), attempt {rec.get('attempt', 1) + 1}"
    if status == BatchStatus.INVALIDATED:
        return RUN, "invalidated (winnow invalidate)"
    return RUN, "interrupted attempt"


def _committed(rec: dict[str, Any]) -> list[tuple[str, ArtifactRef]]:
    """A SUCCEEDED record's artifacts, each named as a reason names it: output, quarantine..."""
    return [(what, ArtifactRef(**art)) for what, art in record_artifacts(rec) if art is not None]


def verify_skips(plans: list[BatchPlan], artifacts: ArtifactStore) -> None:
    """Re-hash every artifact a skip relies on; a mismatch turns the skip into a run."""
    todo = [(bp, i) for bp in plans for i, a in enumerate(bp.actions) if a == SKIP]

    def check(item: tuple[BatchPlan, int]) -> tuple[BatchPlan, int, str | None]:
        bp, i = item
        rec = bp.prior[i]
        assert rec is not None
        for _, ref in _committed(rec):
            problem = artifacts.check(ref, full=True)
            if problem is not None:
                return bp, i, str(problem)
        return bp, i, None

    for bp, i, problem in map_threads(check, todo, 8):
        if problem:
            bp.actions[i] = RUN
            bp.reasons[i] = "artifact failed verification"
