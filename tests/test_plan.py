"""The planner's decisions, from the state alone: run, skip or retry, and why.

No Ray and no run: a three-stage pipeline over one small JSONL file (three
batches of ten rows), a state and an artifact store on ``memory://`` or a
temporary folder, and checkpoint records written through the storage API the
way a run commits them (a real artifact, then its record). Each test changes
one thing (a record, an artifact, a parameter, the input, the history of the
last run) and reads what ``make_plan`` decides for every (stage, batch).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pytest

from winnow.errors import ConfigError
from winnow.history import History
from winnow.pipeline import Pipeline
from winnow.plan import Plan, make_plan
from winnow.profile import Profile, StageOverride
from winnow.stage import Stage
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.fs import join
from winnow.storage.state import State

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])
ROWS, BATCH_ROWS = 30, 10  # three batches


class Passing(Stage):
    """Passes batches through: the planner never calls ``process``; only names,
    versions and parameters (the fingerprint) matter here."""

    version = "1"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch


@dataclass
class First(Passing):
    name = "first"

    factor: int = 1


@dataclass
class Second(Passing):
    name = "second"

    suffix: str = ""


@dataclass
class Third(Passing):
    name = "third"


STAGES = ["first", "second", "third"]


def write_input(path: Path, rows: int = ROWS, word: str = "row") -> str:
    path.write_text(
        "".join(json.dumps({"id": i, "text": f"{word} {i}"}) + "\n" for i in range(rows))
    )
    return str(path)


class Planner:
    """One pipeline's inputs, state and artifact store; plans and commits like a run."""

    def __init__(self, root: str, inputs: list[str]) -> None:
        self.inputs = inputs
        self.state = State(join(root, "state"))
        self.state.prepare()
        self.artifacts = ArtifactStore(join(root, "out", "artifacts"))
        self.stages: list[Stage] = [First(), Second(), Third()]
        self.profile = Profile(name="test", batch_rows=BATCH_ROWS)

    @property
    def pipeline(self) -> Pipeline:
        return Pipeline(name="planned", stages=self.stages, schema=SCHEMA)

    def plan(self, **options: Any) -> Plan:
        return make_plan(
            self.pipeline, self.profile, self.inputs, self.state, self.artifacts, **options
        )

    def record(self, stage: str, key: str, status: str, **fields: Any) -> None:
        """Append one checkpoint record and flush it, as a run's commit does."""
        store = self.state.checkpoints(job_id=f"test-{uuid.uuid4().hex[:8]}")
        store.append({"stage": stage, "key": key, "status": status, "attempt": 1, **fields})
        store.flush()
        time.sleep(0.002)  # the next record of the same key is newer

    def put(self, stage: str, key: str, quarantine: bool = False) -> dict[str, Any]:
        """Publish an artifact for (stage, key) and commit it; return the record's fields."""
        batch = pa.record_batch({"stage": [stage], "key": [key]})
        fields: dict[str, Any] = {"artifact": self.artifacts.put(batch, "parquet").to_dict()}
        if quarantine:
            bad = json.dumps({"file": "in.jsonl", "row": 3, "error": "x", "key": key})
            ref = self.artifacts.put_bytes(f"{bad}\n".encode(), "jsonl", expected_records=1)
            fields["quarantine"] = {"count": 1, "artifact": ref.to_dict(), "errors": {"X": 1}}
        self.record(stage, key, "SUCCEEDED", **fields)
        return fields

    def commit_all(self, plan: Plan) -> dict[tuple[str, int], dict[str, Any]]:
        """Every (stage, batch) of ``plan`` committed; their records' fields by (stage, batch)."""
        return {
            (stage, n): self.put(stage, bp.keys[i])
            for n, bp in enumerate(plan.batches)
            for i, stage in enumerate(STAGES)
        }

    def remove(self, ref: dict[str, Any]) -> None:
        self.artifacts.fs.rm_file(self.artifacts.path_of(ref["uri"]))


@pytest.fixture(params=["memory", "file"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "file":
        yield (tmp_path / "root").as_uri()
        return
    name = f"winnow-plan-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture
def planner(root: str, tmp_path: Path) -> Planner:
    return Planner(root, [write_input(tmp_path / "in.jsonl")])


def history_of(plan: Plan) -> History:
    """What a run of ``plan`` records for the next plan to compare with (see api._history)."""
    return History(
        stages={s.name: {**s.parts, "fingerprint": s.fingerprint} for s in plan.stages},
        files={f.url: f.identity for f in plan.files},
        batch_rows=plan.profile.batch_rows,
        reader=plan.reader,
    )


def decisions(plan: Plan, stage: str) -> list[tuple[str, str]]:
    """(action, reason) of ``stage`` for each batch, in source order."""
    i = STAGES.index(stage)
    return [
        (str(getattr(bp.actions[i], "value", bp.actions[i])), bp.reasons[i]) for bp in plan.batches
    ]


def every(plan: Plan, stage: str) -> set[tuple[str, str]]:
    return set(decisions(plan, stage))


SKIPPED = {("skip", "committed")}


# -- no checkpoint under the batch's key ------------------------------------------
def test_a_fresh_state_runs_every_batch_of_every_stage_as_new(planner: Planner):
    plan = planner.plan()
    assert len(plan.batches) == ROWS // BATCH_ROWS and plan.work == 3
    for stage in STAGES:
        assert decisions(plan, stage) == [("run", "new batch")] * 3
    assert plan.to_dict()["stages"][0]["reasons"] == {"new batch": 3}


def test_committed_batches_are_skipped(planner: Planner):
    planner.commit_all(planner.plan())
    plan = planner.plan()
    assert plan.work == 0 and plan.active_stages() == [False, False, False]
    for stage in STAGES:
        assert every(plan, stage) == SKIPPED
    assert plan.before == {stage: {"SUCCEEDED": 3} for stage in STAGES}


def test_a_changed_input_file_reruns_its_batches(planner: Planner, tmp_path: Path):
    before = planner.plan()
    planner.commit_all(before)
    write_input(tmp_path / "in.jsonl", word="changed")  # same rows, other bytes
    plan = planner.plan(history=history_of(before))
    for stage in STAGES:
        assert every(plan, stage) == {("run", "input file changed")}


def test_a_new_input_file_runs_only_its_batches(planner: Planner, tmp_path: Path):
    before = planner.plan()
    planner.commit_all(before)
    planner.inputs.append(write_input(tmp_path / "more.jsonl", rows=20))
    plan = planner.plan(history=history_of(before))
    for stage in STAGES:
        assert decisions(plan, stage) == [
            *[("skip", "committed")] * 3,
            *[("run", "new input file")] * 2,
        ]


def test_new_batch_boundaries_name_the_batch_rows_change(planner: Planner):
    before = planner.plan()
    planner.commit_all(before)
    planner.profile = Profile(name="test", batch_rows=15)
    plan = planner.plan(history=history_of(before))
    reason = "batch_rows changed 10 -> 15 (batch boundaries moved)"
    assert len(plan.batches) == 2
    for stage in STAGES:
        assert every(plan, stage) == {("run", reason)}


def test_a_new_bad_record_policy_names_the_reader_change(planner: Planner):
    before = planner.plan()
    planner.commit_all(before)
    planner.profile = Profile(name="test", batch_rows=BATCH_ROWS, on_bad_record="skip")
    plan = planner.plan(history=history_of(before))
    for stage in STAGES:
        assert every(plan, stage) == {("run", "input schema or on_bad_record changed")}


def test_a_parameter_change_reruns_that_stage_and_the_ones_after_it(planner: Planner):
    before = planner.plan()
    planner.commit_all(before)
    planner.stages[1] = Second(suffix="!")
    plan = planner.plan(history=history_of(before))
    assert every(plan, "first") == SKIPPED
    assert every(plan, "second") == {("run", "second parameter suffix '' -> '!'")}
    assert every(plan, "third") == {("run", "upstream stage second changed")}


def test_a_first_stage_parameter_change_reruns_everything_and_names_the_cause(planner: Planner):
    before = planner.plan()
    planner.commit_all(before)
    planner.stages[0] = First(factor=2)
    plan = planner.plan(history=history_of(before))
    assert every(plan, "first") == {("run", "first parameter factor 1 -> 2")}
    for stage in ("second", "third"):
        assert every(plan, stage) == {("run", "upstream stage first changed")}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": "0"}, "first version 0 -> 1"),
        ({"code": "an older edit"}, "code of stage first changed"),
        ({"version": "0", "params": {}}, "first version 0 -> 1; first parameter factor None -> 1"),
        (
            {"params": None},
            "first: fingerprint changed (checkpoints from before code-aware fingerprints)",
        ),
        ({}, "first: fingerprint changed"),
    ],
)
def test_the_last_runs_record_of_a_stage_names_what_changed(
    planner: Planner, change: dict[str, Any], reason: str
):
    """The previous run's fingerprint parts (History), one of them different."""
    now = planner.plan()
    recorded = {**now.stages[0].parts, "fingerprint": "an older fingerprint", **change}
    if change.get("params", ...) is None:
        del recorded["params"]
    plan = planner.plan(history=History(stages={"first": recorded}))
    assert every(plan, "first") == {("run", reason)}
    assert every(plan, "second") == {("run", "upstream stage first changed")}


# -- a SUCCEEDED checkpoint: skip only if what it names is still there ------------------
def test_a_missing_artifact_reruns_only_that_stage_of_that_batch(planner: Planner):
    committed = planner.commit_all(planner.plan())
    planner.remove(committed[("second", 1)]["artifact"])
    plan = planner.plan()
    assert every(plan, "first") == SKIPPED
    assert decisions(plan, "second") == [
        ("skip", "committed"),
        ("run", "artifact missing"),
        ("skip", "committed"),
    ]
    assert every(plan, "third") == SKIPPED
    assert plan.work == 1


def test_an_artifact_of_another_size_than_its_checkpoint_reruns(planner: Planner):
    plan = planner.plan()
    key = plan.batches[2].keys[0]
    fields = planner.put("first", key)
    wrong = {**fields["artifact"], "bytes": fields["artifact"]["bytes"] + 1}
    planner.record("first", key, "SUCCEEDED", artifact=wrong)
    assert decisions(planner.plan(), "first")[2] == ("run", "artifact size differs from checkpoint")


def test_a_missing_quarantine_artifact_reruns_its_batch(planner: Planner):
    plan = planner.plan()
    key = plan.batches[0].keys[0]
    fields = planner.put("first", key, quarantine=True)
    assert decisions(planner.plan(), "first")[0] == ("skip", "committed")
    planner.remove(fields["quarantine"]["artifact"])
    assert decisions(planner.plan(), "first")[0] == ("run", "quarantine artifact missing")


def test_verify_full_turns_a_skip_over_a_flipped_byte_into_a_run(planner: Planner):
    committed = planner.commit_all(planner.plan())
    ref = committed[("third", 0)]["artifact"]
    path = planner.artifacts.path_of(ref["uri"])
    data = bytearray(planner.artifacts.fs.cat_file(path))
    data[len(data) // 2] ^= 0x01
    planner.artifacts.fs.pipe_file(path, bytes(data))  # same size: only a re-hash sees it
    assert every(planner.plan(), "third") == SKIPPED
    plan = planner.plan(verify="full")
    assert decisions(plan, "third")[0] == ("run", "artifact failed verification")
    assert decisions(plan, "third")[1:] == [("skip", "committed")] * 2  # re-hashed, intact


# -- FAILED, INVALIDATED, RUNNING ---------------------------------------------------
def test_a_failed_batch_is_retried_with_its_attempt_count(planner: Planner):
    plan = planner.plan()
    planner.commit_all(plan)
    error = {"type": "RuntimeError", "message": "flaky", "traceback": ""}
    planner.record("second", plan.batches[1].keys[1], "FAILED", attempt=2, error=error)
    again = planner.plan()
    assert decisions(again, "second") == [
        ("skip", "committed"),
        ("retry", "failed before (RuntimeError), attempt 3"),
        ("skip", "committed"),
    ]
    assert again.before["second"] == {"SUCCEEDED": 2, "FAILED": 1}
    assert again.to_dict()["stages"][1]["retry"] == 1


def test_a_failure_without_an_error_record_is_retried_as_a_second_attempt(planner: Planner):
    key = planner.plan().batches[0].keys[0]
    store = planner.state.checkpoints(job_id="bare")
    store.append({"stage": "first", "key": key, "status": "FAILED"})
    store.flush()
    plan = planner.plan()
    assert decisions(plan, "first")[0] == ("retry", "failed before (error), attempt 2")
    # the stages after a failed one have no record yet: new to them
    assert decisions(plan, "second")[0] == ("run", "new batch")


def test_only_failed_keeps_just_the_batches_with_a_failed_stage(planner: Planner):
    plan = planner.plan()
    planner.commit_all(plan)
    planner.record("third", plan.batches[2].keys[2], "FAILED", error={"type": "Boom"})
    retry = planner.plan(only_failed=True)
    assert [bp.source.key for bp in retry.batches] == [plan.batches[2].source.key]
    assert decisions(retry, "first") == decisions(retry, "second") == [("skip", "committed")]
    assert decisions(retry, "third") == [("retry", "failed before (Boom), attempt 2")]
    assert retry.work == 1


def test_nothing_to_retry_when_nothing_failed(planner: Planner):
    planner.commit_all(planner.plan())
    assert planner.plan(only_failed=True).batches == []


@pytest.mark.parametrize("stage", ["first", "second"])
def test_an_invalidated_batch_reruns_and_so_does_everything_after_it(planner: Planner, stage: str):
    plan = planner.plan()
    committed = planner.commit_all(plan)
    at = STAGES.index(stage)
    fields = committed[(stage, 1)]
    planner.record(stage, plan.batches[1].keys[at], "INVALIDATED", invalidated=True, **fields)
    again = planner.plan()
    for i, name in enumerate(STAGES):
        expected = ("skip", "committed")
        if i == at:
            expected = ("run", "invalidated (winnow invalidate)")
        elif i > at:
            expected = ("run", f"upstream stage {stage} invalidated")
        assert decisions(again, name) == [("skip", "committed"), expected, ("skip", "committed")]
    assert again.before[stage] == {"SUCCEEDED": 2, "INVALIDATED": 1}


def test_a_running_record_is_an_interrupted_attempt(planner: Planner):
    plan = planner.plan()
    planner.commit_all(plan)
    planner.record("third", plan.batches[0].keys[2], "RUNNING")
    assert decisions(planner.plan(), "third")[0] == ("run", "interrupted attempt")


# -- --rerun STAGE ------------------------------------------------------------------
def test_rerun_forces_that_stage_and_the_ones_after_it(planner: Planner):
    planner.commit_all(planner.plan())
    plan = planner.plan(rerun="second")
    assert every(plan, "first") == SKIPPED
    for stage in ("second", "third"):
        assert decisions(plan, stage) == [("run", "--rerun second")] * 3


def test_rerun_leaves_a_retry_a_retry(planner: Planner):
    plan = planner.plan()
    planner.commit_all(plan)
    planner.record("third", plan.batches[0].keys[2], "FAILED", error={"type": "Boom"})
    assert decisions(planner.plan(rerun="first"), "third") == [
        ("retry", "failed before (Boom), attempt 2"),
        ("run", "--rerun first"),
        ("run", "--rerun first"),
    ]


def test_rerun_of_a_stage_the_pipeline_does_not_have_is_a_config_error(planner: Planner):
    with pytest.raises(ConfigError, match=r"--rerun 'nope': pipeline 'planned' has no such stage"):
        planner.plan(rerun="nope")


def test_rerun_of_a_stage_the_profile_disables_is_a_config_error(planner: Planner):
    planner.profile = Profile(
        name="test", batch_rows=BATCH_ROWS, stages={"second": StageOverride(enabled=False)}
    )
    assert [s.name for s in planner.plan().stages] == ["first", "third"]
    with pytest.raises(ConfigError, match="the profile disables that stage"):
        planner.plan(rerun="second")
