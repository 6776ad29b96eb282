"""The executor contract: every executor runs a pipeline to the same bytes and checkpoints.

One suite, parametrized over every executor, through the public API (as
NeMo Curator's backend integration tests are). Each scenario runs once per
executor for the module, and every executor's run is compared with the Ray
executor's (today's behaviour): the same final artifacts, byte for byte, the
same checkpoint records (less when, where and by which job they were made),
the same retries, poison batches, error groups and quarantined records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT
from winnow import api
from winnow.errors import UsageError
from winnow.execution.executor import EXECUTORS
from winnow.execution.outcome import Progress
from winnow.request import RunRequest
from winnow.storage.artifacts import ArtifactRef, ArtifactStore

FLAKY = str(ROOT / "tests" / "pipelines" / "flaky.py")
REFERENCE = "ray"
FAST = ["batch_rows=10", "max_attempts=2", "retry_backoff_s=0.01", "flaky.fail_mod=20"]
SCENARIOS = {  # the --set options of each scenario
    "clean": [],
    "interrupt": [],
    "flaky": ["flaky.fail_times=1"],  # ids 0, 20, 100 and 120: their batches fail once
    "poison": ["flaky.fail_times=9"],  # ... and for good
}
FAILING = 4  # batches holding an id divisible by 20
# What differs between two runs of the same work: when, where and by which job.
CIRCUMSTANCES = {"ts", "started_at", "duration_s", "process_s", "commit_s"}
CIRCUMSTANCES |= {"node", "node_id", "pid", "job_id"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """42 JSONL lines (two of them bad records) read by stream, and 30 Parquet
    rows in row groups of 10, read by range."""
    d = tmp_path_factory.mktemp("inputs")
    lines = [json.dumps({"id": i, "text": f"row {i}"}) for i in range(40)]
    lines.insert(13, "{not json")
    lines.insert(27, json.dumps({"id": "x", "text": "an id that is not a number"}))
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    ids = list(range(100, 130))
    table = pa.table({"id": ids, "text": [f"row {i}" for i in ids]})
    pq.write_table(table, d / "b.parquet", row_group_size=10)
    return [str(d / "a.jsonl"), str(d / "b.parquet")]


def session(where: Path, inputs: list[str], sets: list[str]) -> api.Session:
    return api.resolve_session(
        RunRequest(
            FLAKY,
            "local-cpu",
            inputs,
            str(where / "out"),
            str(where / "state"),
            [*FAST, f"flaky.marks={where / 'marks'}", *sets],
        )
    )


class StopAfterFirst(Progress):
    """Sets ``stop`` when the first batch commits (as Ctrl-C in the CLI does)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop_event = stop

    def advance(self, stage: str, rows: int) -> None:
        self.stop_event.set()


@dataclass
class Run:
    """One scenario run by one executor: its job record, then a rerun's."""

    where: Path
    record: dict[str, Any]
    rerun: dict[str, Any]

    def checkpoints(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per stage, per batch key, its latest checkpoint record, less its circumstances."""
        store = api.open_state(str(self.where / "state")).checkpoints()
        return {
            stage: {k: self._plain(r) for k, r in store.load(stage).records.items()}
            for stage in store.stages()
        }

    def _plain(self, record: dict[str, Any]) -> dict[str, Any]:
        plain = {k: v for k, v in record.items() if k not in CIRCUMSTANCES}
        if plain.get("artifact"):
            plain["artifact"] = self._relative(plain["artifact"])
        if plain.get("quarantine"):
            q = plain["quarantine"]
            plain["quarantine"] = {**q, "artifact": self._relative(q["artifact"])}
        if plain.get("error"):
            plain["error"] = without_traceback(plain["error"])
        return plain

    def _relative(self, artifact: dict[str, Any]) -> dict[str, Any]:
        root = str(self.where / "out" / "artifacts")
        return {**artifact, "uri": artifact["uri"].removeprefix(root)}

    def finals(self, record: dict[str, Any] | None = None) -> list[str | None]:
        """The final stage's artifact digests, in source order (None: no output)."""
        manifest = api.read_manifest((record or self.record)["manifest"])
        return [e["artifact"]["digest"] if e["artifact"] else None for e in manifest["batches"]]

    def quarantined(self) -> list[str]:
        return sorted(
            r["quarantine"]["artifact"]["digest"]
            for r in self.checkpoints()["flaky"].values()
            if r.get("quarantine")
        )


def without_traceback(error: dict[str, Any]) -> dict[str, Any]:
    """An error record less its traceback (Ray's tells of its own frames)."""
    return {k: v for k, v in error.items() if k != "traceback"}


def counts(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: {k: v for k, v in c.items() if k != "busy_s"} for n, c in record["counts"].items()}


class Runs:
    """Each scenario, run once per executor for the module."""

    def __init__(self, tmp: pytest.TempPathFactory, inputs: list[str]) -> None:
        self.tmp = tmp
        self.inputs = inputs
        self.done: dict[tuple[str, str], Run] = {}

    def get(self, scenario: str, executor: str) -> Run:
        if (scenario, executor) not in self.done:
            self.done[scenario, executor] = self._run(scenario, executor)
        return self.done[scenario, executor]

    def _run(self, scenario: str, executor: str) -> Run:
        where = self.tmp.mktemp(f"{scenario}-{executor}")
        (where / "marks").mkdir()
        sets = SCENARIOS[scenario]
        stop = threading.Event()
        progress = StopAfterFirst(stop) if scenario == "interrupt" else None
        first = api.execute(
            session(where, self.inputs, sets), executor=executor, progress=progress, stop=stop
        )
        rerun = api.execute(session(where, self.inputs, sets), executor=executor)
        return Run(where, first, rerun)


@pytest.fixture(scope="module")
def runs(local_ray: None, tmp_path_factory: pytest.TempPathFactory, inputs: list[str]) -> Runs:
    return Runs(tmp_path_factory, inputs)


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
class TestExecutor:
    def test_same_pipeline_same_bytes_and_checkpoints(self, runs: Runs, executor: str) -> None:
        run, ref = runs.get("clean", executor), runs.get("clean", REFERENCE)
        record = run.record
        assert record["status"] == "SUCCEEDED"
        assert record["batches"] == 8 and record["rows_out"] == 70 and record["bad_records"] == 2
        assert None not in run.finals() and run.finals() == ref.finals()
        checkpoints = run.checkpoints()
        assert {stage: len(c) for stage, c in checkpoints.items()} == {"flaky": 8, "upper": 8}
        assert checkpoints == ref.checkpoints()
        assert counts(record) == counts(ref.record)
        assert record["accounting"] == ref.record["accounting"]
        assert record["accounting"]["total"]["unaccounted"] == 0

    def test_every_stage_instance_is_torn_down_once(self, runs: Runs, executor: str) -> None:
        run = runs.get("clean", executor)  # one flaky actor (max_actors=1); the rerun ran none
        assert len(list((run.where / "marks").glob("teardown-*"))) == 1

    def test_bad_records_are_quarantined_the_same(self, runs: Runs, executor: str) -> None:
        run, ref = runs.get("clean", executor), runs.get("clean", REFERENCE)
        assert run.record["accounting"]["total"]["quarantined"] == 2
        assert len(run.quarantined()) == 2 and run.quarantined() == ref.quarantined()
        store = ArtifactStore(str(run.where / "out" / "artifacts"))
        for r in run.checkpoints()["flaky"].values():
            if r.get("quarantine"):
                ref_ = r["quarantine"]["artifact"]
                uri = str(run.where / "out" / "artifacts") + ref_["uri"]
                assert store.read(ArtifactRef(**{**ref_, "uri": uri})).num_rows == 1

    def test_a_rerun_skips_everything(self, runs: Runs, executor: str) -> None:
        run = runs.get("clean", executor)
        rerun = run.rerun
        assert rerun["status"] == "SUCCEEDED" and rerun["skipped_fraction"] == 1.0
        assert all(c["run"] == 0 and c["skipped"] == 8 for c in rerun["counts"].values())
        assert run.finals(rerun) == run.finals()

    def test_a_transient_failure_is_retried_and_succeeds(self, runs: Runs, executor: str) -> None:
        run, ref = runs.get("flaky", executor), runs.get("flaky", REFERENCE)
        record = run.record
        assert record["status"] == "SUCCEEDED" and record["poison_batches"] == []
        assert record["counts"]["flaky"]["retried"] == FAILING
        assert counts(record) == counts(ref.record)
        retried = [r for r in run.checkpoints()["flaky"].values() if r["attempt"] == 2]
        assert len(retried) == FAILING and all(r["status"] == "SUCCEEDED" for r in retried)
        assert run.checkpoints() == ref.checkpoints()
        assert run.finals() == runs.get("clean", REFERENCE).finals()

    def test_a_batch_that_always_fails_is_poison(self, runs: Runs, executor: str) -> None:
        run, ref = runs.get("poison", executor), runs.get("poison", REFERENCE)
        record = run.record
        assert record["status"] == "FAILED"
        assert len(record["poison_batches"]) == FAILING

        def poison(r: dict[str, Any]) -> list[dict[str, Any]]:
            return sorted(r["poison_batches"], key=lambda p: p["key"])

        assert poison(record) == poison(ref.record)
        assert all(p["attempts"] == 2 for p in record["poison_batches"])
        errors = {
            k: {**g, "example": without_traceback(g["example"])}
            for k, g in record["errors"].items()
        }
        assert errors == {
            "RuntimeError": {
                "count": 2 * FAILING,
                "example": {"type": "RuntimeError", "message": "flaky: failing on purpose (try 1)"},
                "stages": ["flaky"],
            }
        }
        assert run.checkpoints() == ref.checkpoints()
        assert run.finals() == ref.finals() and run.finals().count(None) == FAILING
        assert record["accounting"] == ref.record["accounting"]

    def test_an_interrupt_keeps_what_was_committed(self, runs: Runs, executor: str) -> None:
        run = runs.get("interrupt", executor)
        assert run.record["status"] == "CANCELLED"
        committed = run.record["counts"]["flaky"]["run"]
        assert 1 <= committed < 8
        rerun = run.rerun
        assert rerun["status"] == "SUCCEEDED"
        assert rerun["counts"]["flaky"]["skipped"] == committed
        assert rerun["counts"]["flaky"]["run"] == 8 - committed
        assert run.finals(rerun) == runs.get("clean", REFERENCE).finals()


def test_an_unknown_executor_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, inputs: list[str]
) -> None:
    with pytest.raises(UsageError, match="unknown executor 'dask'"):
        api.execute(session(tmp_path, inputs, []), executor="dask")
    assert not (tmp_path / "state").exists()


def test_the_local_executor_attaches_to_no_cluster(tmp_path: Path, inputs: list[str]) -> None:
    with pytest.raises(UsageError, match="drop --address"):
        api.execute(session(tmp_path, inputs, []), executor="local", address="ray://head:10001")
    assert api.open_state(str(tmp_path / "state")).list_jobs() == []


def test_the_local_executor_never_imports_ray(tmp_path: Path, inputs: list[str]) -> None:
    code = f"""
import json, sys
from pathlib import Path
from tests.execution.test_executors import session
from winnow import api
record = api.execute(session(Path({str(tmp_path)!r}), {inputs!r}, []), executor="local")
print(json.dumps({{"status": record["status"], "ray": "ray" in sys.modules}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"status": "SUCCEEDED", "ray": False}
