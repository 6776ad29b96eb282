"""Planning: which (stage, batch) pairs will run, be skipped or be retried, and why.

Planning reads the state (checkpoint segments, one listing per stage, and one
listing of the artifact store) but never starts Ray, so ``winnow plan`` and an
all-skipped rerun cost seconds even for 100,000 batches.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from winnow.errors import IntegrityError
from winnow.pipeline import Pipeline, StageSpec
from winnow.profile import Profile
from winnow.storage import sources
from winnow.storage.artifacts import ArtifactRef, ArtifactStore
from winnow.storage.checkpoints import FAILED, SUCCEEDED
from winnow.storage.state import State

SKIP, RUN, RETRY = "skip", "run", "retry"


@dataclass
class BatchPlan:
    """One source batch's path through the stages."""

    source: sources.SourceBatch
    keys: list[str]
    actions: list[str]
    reasons: list[str]
    prior: list[dict[str, Any] | None]

    @property
    def first_run(self) -> int:
        """Index of the first stage that must run, or the stage count if none."""
        for i, action in enumerate(self.actions):
            if action != SKIP:
                return i
        return len(self.actions)


@dataclass
class StagePlan:
    name: str
    fingerprint: str
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class Plan:
    pipeline: Pipeline
    profile: Profile
    specs: list[StageSpec]
    files: list[sources.SourceFile]
    batches: list[BatchPlan]
    stages: list[StagePlan]
    before: dict[str, dict[str, int]]

    @property
    def work(self) -> int:
        return sum(1 for b in self.batches if b.first_run < len(self.specs))

    def active_stages(self) -> list[bool]:
        """Per stage: whether any batch runs it (only those get actors)."""
        return [any(b.actions[i] != SKIP for b in self.batches) for i in range(len(self.specs))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline.name,
            "profile": self.profile.name,
            "files": len(self.files),
            "batches": len(self.batches),
            "stages": [
                {
                    "name": s.name,
                    "fingerprint": s.fingerprint,
                    "run": s.counts[RUN],
                    "retry": s.counts[RETRY],
                    "skip": s.counts[SKIP],
                    "reasons": dict(s.reasons),
                    "resources": vars(spec.resources),
                }
                for s, spec in zip(self.stages, self.specs, strict=True)
            ],
            "state_before": self.before,
        }


def chain_key(fingerprint: str, input_key: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{input_key}".encode()).hexdigest()


def source_batches(
    files: list[sources.SourceFile], state: State, profile: Profile, pipeline: Pipeline
) -> list[sources.SourceBatch]:
    """Split files into batches, caching each file's row count (and row groups) in the state.

    An index written before row groups were recorded lacks ``row_group_rows``:
    its file is read as one stream, which is always correct.
    """
    reader_fp = sources.reader_fingerprint(pipeline.schema, profile.on_bad_record)
    missing = [f for f in files if state.source_index(f.identity) is None]

    def stats(f: sources.SourceFile) -> tuple[sources.SourceFile, dict[str, int]]:
        return f, sources.file_stats(f, profile.storage_options)

    counted: dict[str, dict[str, Any]] = {}
    if missing:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for f, found in pool.map(stats, missing):
                counted[f.identity] = found
        # Cache the counts only once every file has been read: bad input writes nothing.
        for f in missing:
            state.write_source_index(f.identity, {"url": f.url, **counted[f.identity]})
    out = []
    for f in files:
        found = counted.get(f.identity) or state.source_index(f.identity) or {}
        out.extend(sources.split(f, found, profile.batch_rows, reader_fp))
    return out


def make_plan(
    pipeline: Pipeline,
    profile: Profile,
    inputs: list[str],
    state: State,
    artifacts: ArtifactStore,
    verify: str | None = None,
    previous_fingerprints: dict[str, str] | None = None,
    only_failed: bool = False,
) -> Plan:
    """Decide run/skip/retry for every (stage, batch), reading state only.

    ``only_failed`` keeps just the batches with a FAILED checkpoint at some
    stage (``winnow retry --failed``).
    """
    specs = profile.apply(pipeline)
    files = sources.discover(inputs, profile.storage_options)
    batches = source_batches(files, state, profile, pipeline)
    verify = verify or profile.verify
    store = state.checkpoints()
    loaded = {spec.name: store.load(spec.name).records for spec in specs}
    before = {
        name: dict(Counter(r["status"] for r in records.values()))
        for name, records in loaded.items()
    }
    sizes = artifacts.sizes() if any(loaded.values()) else {}
    prev = previous_fingerprints or {}
    changed_from: str | None = None
    stage_plans = []
    stage_reason_new = []
    for spec in specs:
        fp = spec.stage.fingerprint()
        if changed_from is None and spec.name in prev and prev[spec.name] != fp:
            changed_from = spec.name
            stage_reason_new.append(f"{spec.name} parameters or version changed")
        elif changed_from is not None:
            stage_reason_new.append(f"upstream stage {changed_from} changed")
        else:
            stage_reason_new.append("new batch")
        stage_plans.append(StagePlan(spec.name, fp))

    plans = []
    for sb in batches:
        key = sb.key
        keys, actions, reasons, prior = [], [], [], []
        for i, spec in enumerate(specs):
            key = chain_key(stage_plans[i].fingerprint, key)
            rec = loaded[spec.name].get(key)
            action, reason = _decide(rec, sizes, stage_reason_new[i])
            keys.append(key)
            actions.append(action)
            reasons.append(reason)
            prior.append(rec)
        plans.append(BatchPlan(sb, keys, actions, reasons, prior))

    if only_failed:
        plans = [bp for bp in plans if RETRY in bp.actions]
    if verify == "full":
        _verify_skips(plans, artifacts)
    for bp in plans:
        for i, sp in enumerate(stage_plans):
            sp.counts[bp.actions[i]] += 1
            sp.reasons[bp.reasons[i]] += 1
    return Plan(pipeline, profile, specs, files, plans, stage_plans, before)


def _decide(rec: dict[str, Any] | None, sizes: dict[str, int], new_reason: str) -> tuple[str, str]:
    if rec is None:
        return RUN, new_reason
    status = rec["status"]
    if status == SUCCEEDED:
        art = rec["artifact"]
        size = sizes.get(art["digest"])
        if size is None:
            return RUN, "artifact missing"
        if size != art["bytes"]:
            return RUN, "artifact size differs from checkpoint"
        return SKIP, "committed"
    if status == FAILED:
        err = (rec.get("error") or {}).get("type", "error")
        return RETRY, f"failed before ({err}), attempt {rec.get('attempt', 1) + 1}"
    return RUN, "interrupted attempt"


def _verify_skips(plans: list[BatchPlan], artifacts: ArtifactStore) -> None:
    """Re-hash every artifact a skip relies on; a mismatch turns the skip into a run."""
    todo = [(bp, i) for bp in plans for i, a in enumerate(bp.actions) if a == SKIP]

    def check(item: tuple[BatchPlan, int]) -> tuple[BatchPlan, int, str | None]:
        bp, i = item
        rec = bp.prior[i]
        assert rec is not None
        try:
            artifacts.verify(ArtifactRef(**rec["artifact"]))
        except IntegrityError as exc:
            return bp, i, str(exc)
        return bp, i, None

    with ThreadPoolExecutor(max_workers=8) as pool:
        for bp, i, problem in pool.map(check, todo):
            if problem:
                bp.actions[i] = RUN
                bp.reasons[i] = "artifact failed verification"
