"""``winnow.run`` from Python: a typed ``RunResult`` whose output reads as Arrow, pandas, Ray."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import winnow
from tests.conftest import ROOT
from winnow.errors import StateError, UsageError
from winnow.execution.outcome import Progress, StageCounts
from winnow.records import JobStatus

DEMO = str(ROOT / "pipelines" / "demo.py")


def run_demo(
    where: Path, inputs: list[str], batch_rows: int = 700, progress: Progress | None = None
) -> winnow.RunResult:
    return winnow.run(
        DEMO,
        profile="local-cpu",
        inputs=inputs,
        state=str(where / "state"),
        output=str(where / "out"),
        sets=[f"batch_rows={batch_rows}"],
        executor="local",
        progress=progress,
    )


def manifest_table(manifest_url: str) -> pa.Table:
    """The manifest's artifacts read straight from disk, each checked against its digest."""
    manifest = json.loads(Path(manifest_url).read_text())
    tables = []
    for entry in manifest["batches"]:
        art = entry["artifact"]
        data = Path(art["uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["digest"]
        tables.append(pq.read_table(pa.BufferReader(data)))
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, demo_inputs: list[str]) -> dict:
    where = tmp_path_factory.mktemp("result")
    return {"where": where, "result": run_demo(where, demo_inputs)}


def test_run_returns_a_typed_result(first_run: dict):
    result = first_run["result"]
    assert isinstance(result, winnow.RunResult)
    assert result.ok and result.status is JobStatus.SUCCEEDED
    record = result.record  # the job record, as winnow.run returned it before
    assert record["job_id"] == result.job_id and record["status"] == "SUCCEEDED"
    assert list(result.counts) == ["normalize", "quality", "embed"]  # pipeline order
    assert all(isinstance(c, StageCounts) for c in result.counts.values())
    assert result.counts["embed"].rows_out == result.rows_out == record["rows_out"] > 0
    assert result.rows_in == record["rows_in"] and result.bad_records == record["bad_records"]
    assert result.wall_s == record["wall_s"] and result.manifest == record["manifest"]
    assert result.pipeline == "demo" and Path(result.output_url).is_dir()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.status = JobStatus.FAILED  # type: ignore[misc]
    assert "record=" not in repr(result) and result.job_id in repr(result)


def test_output_as_arrow_and_pandas_equals_the_manifests_artifacts(first_run: dict):
    result = first_run["result"]
    expected = manifest_table(result.manifest)
    table = result.to_arrow()
    assert table.num_rows == result.rows_out
    assert table.equals(expected)
    frame = result.to_pandas()
    assert frame.shape == (result.rows_out, table.num_columns)
    assert frame["id"].tolist() == expected.column("id").to_pylist()
    assert frame.equals(expected.to_pandas())
    assert [a.digest for a in result.artifacts()] == [
        e["artifact"]["digest"] for e in json.loads(Path(result.manifest).read_text())["batches"]
    ]


def test_a_rerun_skips_everything_and_reads_the_same_output(
    first_run: dict, demo_inputs: list[str], capsys: pytest.CaptureFixture[str]
):
    again = run_demo(first_run["where"], demo_inputs)
    assert again.ok and again.job_id != first_run["result"].job_id
    assert all(c.run == 0 and c.skipped > 0 for c in again.counts.values())
    assert again.to_arrow().equals(first_run["result"].to_arrow())
    # Not interactive (stderr is no terminal, no notebook): no progress drawn.
    assert "normalize" not in capsys.readouterr().err


def test_progress_goes_to_the_display_given(first_run: dict, demo_inputs: list[str]):
    seen: list[tuple[str, object]] = []

    class Recorder(Progress):
        def start(self, totals: dict[str, int], done: dict[str, int]) -> None:
            seen.append(("start", dict(totals)))

        def advance(self, stage: str, rows: int) -> None:
            seen.append(("advance", stage))

        def stop(self) -> None:
            seen.append(("stop", None))

    where = first_run["where"]
    result = run_demo(where, demo_inputs, batch_rows=1000, progress=Recorder())
    assert result.ok and seen[0][0] == "start" and seen[-1] == ("stop", None)
    batches = len(json.loads(Path(result.manifest).read_text())["batches"])
    assert seen[0][1] == dict.fromkeys(result.counts, batches)
    assert sum(1 for kind, _ in seen if kind == "advance") == 3 * batches


def test_a_result_from_a_stored_record(first_run: dict):
    result = first_run["result"]
    state = winnow.open_state(str(first_run["where"] / "state"))
    again = winnow.RunResult.from_record(state.read_job(result.job_id))
    assert again == result  # record, options and address are not compared
    assert again.to_arrow().equals(result.to_arrow())


def test_a_job_without_a_manifest_says_so(first_run: dict):
    record = {**first_run["result"].record, "status": "FAILED", "manifest": None}
    result = winnow.RunResult.from_record(record)
    assert not result.ok
    with pytest.raises(UsageError, match="no output manifest"):
        result.to_arrow()


def test_a_jobs_output_by_id_reads_as_arrow_pandas_and_a_hugging_face_dataset(first_run: dict):
    result = first_run["result"]
    state = str(first_run["where"] / "state")
    output = winnow.output(result.job_id, state=state)
    assert output == result and winnow.output(result) is result
    table = output.to_arrow()
    assert table.equals(manifest_table(result.manifest))
    assert output.to_pandas().equals(table.to_pandas())
    hf = output.to_hf()
    import datasets

    assert isinstance(hf, datasets.Dataset) and hf.num_rows == result.rows_out
    assert hf.column_names == table.column_names
    assert hf.with_format("arrow")[:].equals(table)  # same rows, same order


def test_output_of_a_job_that_is_not_there_or_has_not_run(first_run: dict, tmp_path: Path):
    state = str(first_run["where"] / "state")
    with pytest.raises(StateError, match=r"no job 'nope'.*winnow jobs"):
        winnow.output("nope", state=state)
    queued = winnow.open_state(str(tmp_path / "state"))
    queued.prepare()
    queued.write_job({"job_id": "demo-queued", "pipeline": "demo", "status": "PENDING"})
    with pytest.raises(UsageError, match="has not run yet"):
        winnow.output("demo-queued", state=str(tmp_path / "state"))
