"""``RunResult.to_ray_dataset``: the output read by Ray Data tasks, each artifact re-hashed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import winnow
from tests.conftest import ROOT
from winnow.execution import cluster

pytestmark = pytest.mark.slow  # starts an embedded Ray

DEMO = str(ROOT / "pipelines" / "demo.py")


def run_demo(where: Path, inputs: list[str]) -> winnow.RunResult:
    return winnow.run(
        DEMO,
        profile="local-cpu",
        inputs=inputs,
        state=str(where / "state"),
        output=str(where / "out"),
        sets=["batch_rows=700"],
        executor="local",  # Ray is not the point of the run: only of reading its output
    )


@pytest.fixture(scope="module")
def embedded_ray():
    yield
    cluster.shutdown()


def test_the_output_as_a_ray_dataset(tmp_path: Path, demo_inputs: list[str], embedded_ray):
    result = run_demo(tmp_path, demo_inputs)
    dataset = result.to_ray_dataset()
    artifacts = json.loads(Path(result.manifest).read_text())["batches"]
    # One read task per artifact: they are read in parallel, not by this process.
    assert dataset.materialize().num_blocks() == len(artifacts) > 1
    assert dataset.count() == result.rows_out
    expected = result.to_arrow()
    rows = dataset.to_arrow_refs()
    import ray

    got = sorted(i for t in ray.get(rows) for i in t.column("id").to_pylist())
    assert got == sorted(expected.column("id").to_pylist())
    assert dataset.schema().names == expected.schema.names


def test_a_jobs_output_by_id_as_a_ray_dataset_in_source_order(
    tmp_path: Path, demo_inputs: list[str], embedded_ray
):
    result = run_demo(tmp_path, demo_inputs)
    output = winnow.output(result.job_id, state=str(tmp_path / "state"))
    dataset = output.to_ray_dataset()
    assert dataset.materialize().num_blocks() == len(result.artifacts()) > 1
    ids = [row["id"] for row in dataset.take_all()]
    assert ids == result.to_arrow().column("id").to_pylist()  # in order, not just the same rows
    # Order is kept by the dataset's own context (a few tiny blocks often keep it anyway).
    assert dataset.context.execution_options.preserve_order


def test_a_damaged_artifact_fails_the_read(tmp_path: Path, demo_inputs: list[str], embedded_ray):
    result = run_demo(tmp_path, demo_inputs)
    victim = Path(result.artifacts()[1].uri)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only a re-hash can tell
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    with pytest.raises(Exception, match="SHA-256"):
        result.to_ray_dataset().materialize()


def test_an_empty_output_is_an_empty_dataset(tmp_path: Path, embedded_ray):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run_demo(tmp_path, [str(empty)])
    assert result.ok and result.rows_out == 0
    assert result.to_ray_dataset().count() == 0 == result.to_arrow().num_rows
