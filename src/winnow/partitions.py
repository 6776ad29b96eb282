"""Planning the reduce side of a grouping stage: one batch per partition.

A pipeline with a grouping stage runs in two segments (see
``winnow.grouping``): the stages up to the grouping stage's map side, then
its reduce side and the stages after it. The second segment's batches are
the partitions, and a partition's input is the set of shards the map side
committed for it, so it can only be planned from the map side's committed
checkpoints: after the first segment ran, or at once when every map batch
was already committed (``winnow plan`` then shows it; otherwise it shows the
reduce side as pending upstream).

A partition's key is the SHA-256 of the sorted digests of its shards, and
its reduce side's key chains the reduce fingerprint onto it like any stage's
(``plan.chain_key``): a partition whose shards are all unchanged is skipped,
and one whose shards changed (an input file changed) is recomputed.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from winnow import sources
from winnow.errors import InputError
from winnow.grouping import GlobalStage, GroupingStage, split_specs
from winnow.history import History
from winnow.pipeline import Pipeline, StageSpec
from winnow.plan import Decider, Plan, StagePlan, count_actions, verify_skips
from winnow.profile import Profile
from winnow.rejoin import Rejoin
from winnow.storage.artifacts import ArtifactStore

PARTITION_FORMAT = "shards"  # the "format" of a partition's pseudo source file
# How many times larger than its file a compressed input (Parquet, .zst, .gz)
# is taken to be in memory when sizing partitions: a rough, safe-side guess.
COMPRESSED_RATIO = 4


class PartitionDecider(Decider):
    """A ``Decider`` whose batches are partitions: a new key means new or changed shards.

    Or, after a rejoin stage, input batches read again: a new key means the
    input batch or the rejoined context changed.
    """

    new_reason = "new partition or its shards changed"

    def _why_new(self, i: int, first_new: int, sb: sources.SourceBatch) -> str:
        if first_new == 0 and not self.changes[0]:
            return self.new_reason
        return super()._why_new(i, first_new, sb)


@dataclass
class Barrier:
    """The reduce side of a plan's grouping stage and the stages after it.

    Attributes:
        name: the grouping stage's name.
        partitions: how many partitions its map side splits into.
        specs: the second segment's stages: the reduce side, then the rest.
        decider: decides run/skip/retry for the second segment's stages.
        loaded: per second-segment stage, its latest checkpoint record by key.
        before: per second-segment stage, its checkpoints by status.
        verify: how skips are checked (``full`` re-hashes).
        next: the second segment's plan, once the map side's checkpoints
            are all committed (None until then, or when some map batch failed).
        then: the barrier of the next grouping stage in the second segment's
            stages, if any (it becomes ``next.barrier``).
    """

    pipeline: Pipeline
    profile: Profile
    name: str
    partitions: int
    specs: list[StageSpec]
    decider: PartitionDecider
    loaded: dict[str, dict[str, dict[str, Any]]]
    before: dict[str, dict[str, int]]
    verify: str | None = None
    next: Plan | None = None
    reader: str = ""
    damage: list[str] = field(default_factory=list)
    then: Barrier | None = None
    declared: int = 0  # the partitions the stage declared (before sizing to the budget)
    is_global: bool = False  # a global stage: one partition, all of its input at once
    # A rejoin stage: its batches are the pipeline's input batches, read again.
    inputs: list[sources.SourceBatch] | None = None
    context: int = 0  # a rejoin: how many artifacts its context holds, once planned

    @property
    def rejoin(self) -> bool:
        """Whether this barrier is a rejoin stage's (not a grouping stage's)."""
        return self.inputs is not None

    def chain(self) -> list[Barrier]:
        """This barrier and every later one, in pipeline order."""
        return [self, *(self.then.chain() if self.then is not None else [])]

    @property
    def stages(self) -> list[StagePlan]:
        """The second segment's stages as a plan shows them."""
        return self.decider.stages

    def plan_next(
        self,
        map_records: list[dict[str, Any] | None],
        artifacts: ArtifactStore,
        sizes: dict[str, int] | None = None,
    ) -> Plan | None:
        """Plan the partitions from the map side's checkpoint per map batch (source order).

        Returns None, planning nothing, when any map batch has no committed
        checkpoint: a partition planned without all of its shards would
        reduce part of its rows. ``sizes`` is the store's listing (taken
        here when not given and some second-segment stage has checkpoints).
        """
        what = "artifact" if self.rejoin else "shards"
        if any(rec is None or rec.get(what) is None for rec in map_records):
            return None
        if sizes is None:
            sizes = artifacts.sizes() if any(self.loaded.values()) else {}
        self.decider.sizes = sizes
        plans = []
        if self.inputs is not None:
            self.check_inputs()
            context = [rec["artifact"] for rec in map_records if rec is not None]
            self.context = len(context)
            for sb in rejoin_batches(self.inputs, context):
                bp = self.decider.batch(sb)
                bp.context = context
                plans.append(bp)
        for sb, shards in [] if self.rejoin else partition_batches(self.name, map_records):
            bp = self.decider.batch(sb)
            bp.shards = shards
            plans.append(bp)
        if self.verify == "full":
            verify_skips(plans, artifacts)
        for stage in self.decider.stages:
            stage.counts, stage.reasons = Counter(), Counter()
        count_actions(plans, self.decider.stages)
        self.next = Plan(
            self.pipeline,
            self.profile,
            self.specs,
            [],
            plans,
            self.decider.stages,
            self.before,
            self.reader,
            self.damage,
        )
        self.next.barrier = self.then
        if self.then is not None and not any(bp.first_run < len(self.specs) for bp in plans):
            # Every partition is committed up to the next map side: plan its partitions too.
            self.then.plan_next([bp.prior[-1] for bp in plans], artifacts, sizes)
        return self.next

    def check_inputs(self) -> None:
        """Refuse to read the input again when a file changed since the run read it first.

        Raises:
            InputError: naming the files; the rejoin would mix two versions.
        """
        files = list({sb.file.url: sb.file for sb in self.inputs or []}.values())
        changed = sources.changed_since(files, self.profile.storage_options)
        if changed:
            raise InputError(
                f"rejoin stage {self.name} must read the input again, but "
                f"{', '.join(changed[:3])}{' and more' if len(changed) > 3 else ''} changed "
                "since the run first read it: the stages before it saw the old version. Rerun "
                "the same command (what is committed stays; the changed files' batches rerun)"
            )

    def to_dict(self, map_batches: int | None) -> dict[str, Any]:
        """What ``winnow plan --json`` says of the grouping stage (and its skew, once planned).

        ``map_batches`` is how many batches its map side runs on (None: not
        known yet, the segment before is not planned). Once its partitions
        are planned: their rows and bytes (smallest, largest, mean) and the
        skew, the largest partition's rows over the mean.
        """
        out: dict[str, Any] = {
            "stage": self.name,
            "partitions": self.partitions,
            "declared_partitions": self.declared,
            "global": self.is_global,
            "map_batches": map_batches,
            "reduce_partitions": None if self.next is None else len(self.next.batches),
            "pending": self.next is None,
        }
        if self.next is not None and self.next.batches:
            rows = [bp.source.stop - bp.source.start for bp in self.next.batches]
            size = [bp.source.file.size or 0 for bp in self.next.batches]
            mean = sum(rows) / len(rows)
            out["partition_rows"] = {"min": min(rows), "max": max(rows), "mean": round(mean, 1)}
            out["partition_bytes"] = {"min": min(size), "max": max(size), "total": sum(size)}
            out["skew"] = round(max(rows) / mean, 2) if mean else 1.0
            # Shards are stored compressed (Parquet, zstd): scaled up as compressed inputs are.
            compressed = self.profile.artifact_format == "parquet" or (
                self.profile.compression != "none"
            )
            budget = (self.profile.partition_mb << 20) // (COMPRESSED_RATIO if compressed else 1)
            over = [
                bp.source.index for bp, b in zip(self.next.batches, size, strict=True) if b > budget
            ]
            if over:
                out["over_budget"] = over
        return out


def rejoin_batches(
    inputs: list[sources.SourceBatch], context: list[dict[str, Any]]
) -> list[sources.SourceBatch]:
    """The input batches again, each keyed by its key and the context's digests (in order)."""
    digests = "\n".join(str(ref["digest"]) for ref in context)
    of_context = hashlib.sha256(f"rejoin/v1|{digests}".encode()).hexdigest()
    return [
        dataclasses.replace(sb, key=hashlib.sha256(f"{of_context}|{sb.key}".encode()).hexdigest())
        for sb in inputs
    ]


def partition_batches(
    name: str, map_records: list[dict[str, Any] | None]
) -> list[tuple[sources.SourceBatch, list[dict[str, Any]]]]:
    """Each non-empty partition as a source batch, with its shards in source order.

    The batch's key is the SHA-256 of the sorted shard digests; its rows
    ``[0, records)`` are the partition's rows, so row accounting counts them.
    The shards stay in the order of ``map_records`` (the map batches', source
    order), the order a streaming reduce reads them in.
    """
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for rec in map_records:
        assert rec is not None and rec.get("shards") is not None
        for p, ref in rec["shards"].items():
            by_partition.setdefault(int(p), []).append(ref)
    out = []
    for p in sorted(by_partition):
        shards = by_partition[p]
        digests = "\n".join(sorted(str(ref["digest"]) for ref in shards))
        key = hashlib.sha256(f"partition/v1|{digests}".encode()).hexdigest()
        rows = sum(int(ref["records"]) for ref in shards)
        size = sum(int(ref["bytes"]) for ref in shards)
        file = sources.SourceFile(
            f"{name}/partition-{p:05d}", PARTITION_FORMAT, None, size, key[:16]
        )
        out.append((sources.SourceBatch(file, p, 0, rows, key, by_range=True), shards))
    return out


def make_barrier(
    pipeline: Pipeline,
    profile: Profile,
    after: list[StageSpec],
    history: History,
    loaded: dict[str, dict[str, dict[str, Any]]],
    artifacts: ArtifactStore,
    reader: str,
    forced: int | None,
    verify: str | None,
    inputs: list[sources.SourceBatch],
) -> Barrier:
    """The barrier of a plan whose stages ``after`` follow a barrier.

    ``after`` starts with a grouping stage's reduce side, or with a rejoin
    stage (whose batches are ``inputs``, the pipeline's input batches).
    ``loaded`` holds every stage's checkpoints by key; ``forced`` is the
    index in ``after`` of the first stage to rerun (``--rerun``). A later
    barrier in ``after`` ends this barrier's segment (at a grouping stage's
    map side) and makes the next barrier (``then``).
    """
    first = after[0].stage
    grouping = getattr(first, "grouping", None)
    assert grouping is not None or isinstance(first, Rejoin)
    specs, rest = split_specs(after)
    mine = {spec.name: loaded[spec.name] for spec in specs}
    before = {
        name: dict(Counter(r["status"] for r in records.values())) for name, records in mine.items()
    }
    decider = PartitionDecider(specs, profile, history, mine, artifacts, {}, reader, forced)
    then = None
    if rest is not None:
        later = None if forced is None else max(forced - len(specs), 0)
        then = make_barrier(
            pipeline, profile, rest, history, loaded, artifacts, reader, later, verify, inputs
        )
    barrier = Barrier(
        pipeline, profile, first.stage_name, 1, specs, decider, mine, before, verify,
        reader=reader, then=then,
    )  # fmt: skip
    if grouping is None:  # a rejoin stage
        decider.new_reason = "input batch or rejoined context changed"
        barrier.inputs = inputs
    else:
        barrier.name, barrier.partitions = grouping.stage_name, grouping.partitions
        barrier.declared = getattr(grouping, "declared_partitions", grouping.partitions)
        barrier.is_global = isinstance(grouping, GlobalStage)
    return barrier


def groupings(the_plan: Plan) -> list[dict[str, Any]]:
    """What a plan or job record says of each grouping stage (``Barrier.to_dict``)."""
    out: list[dict[str, Any]] = []
    inputs: int | None = len(the_plan.batches)
    for b in the_plan.barriers():
        if not b.rejoin:
            out.append(b.to_dict(inputs))
        inputs = len(b.next.batches) if b.next is not None else None
    return out


def rejoins(the_plan: Plan) -> list[dict[str, Any]]:
    """What a plan or job record says of each rejoin stage: its batches and context."""
    return [
        {
            "stage": b.name,
            "input_batches": len(b.inputs or []),
            "context_artifacts": None if b.next is None else b.context,
            "pending": b.next is None,
        }
        for b in the_plan.barriers()
        if b.rejoin
    ]


def input_bytes(files: list[sources.SourceFile]) -> int:
    """The input's estimated size in memory: file sizes, compressed ones scaled up."""
    total = 0
    for f in files:
        compressed = f.compression is not None or f.format == "parquet"
        total += f.size * (COMPRESSED_RATIO if compressed else 1)
    return total


def size_partitions(specs: list[StageSpec], estimate: int, budget_mb: int) -> list[StageSpec]:
    """Each grouping stage with enough partitions for ``estimate`` bytes to fit ``budget_mb`` each.

    A stage keeps its own ``partitions`` when that is enough; otherwise it gets
    the next power of two that is (so the count, part of the map side's
    fingerprint, changes only when the input doubles). A changed stage is a
    copy that remembers what it declared (``declared_partitions``); a global
    stage keeps its one partition.
    """
    needed = max(1, -(-estimate // (budget_mb << 20)))
    needed = 1 << (needed - 1).bit_length()
    out = []
    for spec in specs:
        stage = spec.stage
        if (
            isinstance(stage, GroupingStage)
            and not isinstance(stage, GlobalStage)
            and stage.partitions < needed
        ):
            declared = stage.partitions
            stage = copy.copy(stage)
            stage.partitions = needed  # type: ignore[misc]
            stage.declared_partitions = declared  # type: ignore[attr-defined]
            spec = StageSpec(stage, spec.resources)
        out.append(spec)
    return out
