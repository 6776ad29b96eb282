"""A rejoin stage (tests/pipelines/rejoin_share.py): the input read again after a
global stage, with the global stage's output as context. Correct rows and row
accounting, skipped when unchanged, only what changed rerun (one file's rejoin
batches when the context stayed the same, every one when it changed), the same
bytes on Ray, resumable after a SIGKILL during the rejoin, visible in ``plan``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import winnow
from tests import processes
from tests.conftest import ROOT, run_args, run_json
from tests.e2e.test_exact_dedup import digests, ran, run_local
from winnow import api
from winnow.errors import ConfigError
from winnow.grouping import expand
from winnow.pipeline import StageSpec, load_pipeline
from winnow.profile import packaged_profiles
from winnow.request import RunRequest

PIPELINE = str(ROOT / "tests" / "pipelines" / "rejoin_share.py")
FILES, ROWS, BATCH = 3, 300, 250  # 2 batches per file: 250 and 50 rows
STAGES = ["size", "longest.map", "longest.reduce", "share", "tag"]


def texts(f: int) -> list[str]:
    """Row r of file f: r % 7 words (so some rows are empty), file 1's row 3 the longest (8)."""
    return [" ".join(["w"] * (r % 7 + (5 if f == 1 and r == 3 else 0))) for r in range(ROWS)]


def write(directory: Path, f: int, rows: list[str]) -> str:
    path = directory / f"part-{f}.jsonl"
    lines = [json.dumps({"id": f * ROWS + r, "text": t}) for r, t in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("corpus")
    return [write(directory, f, texts(f)) for f in range(FILES)]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("clean")
    return {"where": where, "record": run_local(PIPELINE, corpus, where)}


def test_every_input_row_is_read_again_with_the_global_stages_output(clean: dict[str, Any]):
    record = clean["record"]
    assert record["status"] == "SUCCEEDED"
    assert list(record["counts"]) == STAGES
    rows = api.output_table(record).to_pylist()
    empty = sum(1 for f in range(FILES) for t in texts(f) if not t)
    assert len(rows) == FILES * ROWS - empty
    longest = 3 + 5  # file 1's row 3
    for row in rows:  # in source order, with share = words / the longest over every file
        assert row["share"] == pytest.approx(len(row["text"].split()) / longest)
        assert row["tag"] == ("longest" if row["share"] == 1.0 else "shorter")
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert set(rows[0]) == {"id", "text", "share", "tag"}  # no _winnow_ columns
    total = record["accounting"]["total"]
    assert (total["read"], total["passed"], total["unaccounted"]) == (900, 900 - empty, 0)
    assert total["filtered_by_stage"] == {"share": empty}
    assert all(f["read"] == ROWS for f in record["accounting"]["files"].values())
    assert record["rejoins"] == [
        {"stage": "share", "input_batches": 6, "context_artifacts": 1, "pending": False}
    ]
    assert ran(record, "share") == (6, 0) and ran(record, "tag") == (6, 0)
    state = api.open_state(str(clean["where"] / "state"))
    removed = winnow.removed(state, record["job_id"])
    assert removed.num_rows == empty and set(removed.column_names) >= {"id", "_winnow_row"}


def test_an_unchanged_rerun_skips_everything(clean: dict[str, Any], corpus: list[str]):
    again = run_local(PIPELINE, corpus, clean["where"])
    assert all(ran(again, s)[0] == 0 for s in STAGES)
    assert digests(again) == digests(clean["record"])
    assert again["accounting"]["total"] == clean["record"]["accounting"]["total"]


def rerun_with(tmp_path: Path, corpus: list[str], rows: list[str]) -> tuple[Any, dict]:
    """Run on copies of the corpus, then again with file 2 holding ``rows``: (plan, record)."""
    inputs = [str(tmp_path / "in" / Path(p).name) for p in corpus]
    (tmp_path / "in").mkdir()
    for p, q in zip(corpus, inputs, strict=True):
        shutil.copy(p, q)
    where = tmp_path / "run"
    first = run_local(PIPELINE, inputs, where)
    assert first["status"] == "SUCCEEDED"
    time.sleep(0.01)
    write(tmp_path / "in", 2, rows)
    request = RunRequest(
        PIPELINE, "local-cpu", tuple(inputs), str(where / "out"), str(where / "state"),
        (f"batch_rows={BATCH}",), executor="local",
    )  # fmt: skip
    planned = api.plan(api.resolve_session(request))
    record = run_local(PIPELINE, inputs, where)
    fresh = run_local(PIPELINE, inputs, tmp_path / "fresh")  # a clean run of the new inputs
    assert digests(record) == digests(fresh)
    assert record["accounting"]["total"] == fresh["accounting"]["total"]
    changed = [a != b for a, b in zip(digests(record), digests(first), strict=True)]
    return planned, {**record, "changed": changed}


def test_a_change_that_keeps_the_context_reruns_only_its_files_rejoin_batches(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    rows = texts(2)
    rows[10] = "w w"  # file 2's first batch changes; the longest text stays in file 1
    planned, record = rerun_with(tmp_path, corpus, rows)
    assert planned.to_dict()["rejoins"][0]["pending"]  # planned once longest has run
    assert ran(record, "size") == (2, 4)  # the changed file's two batches
    assert ran(record, "longest.reduce") == (1, 0)  # its input changed...
    assert ran(record, "share") == (2, 4)  # ...its output did not: that file read again
    assert record["changed"] == [False, False, False, False, True, False]


def test_a_change_of_the_context_reruns_every_rejoin_batch(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    rows = texts(2)
    rows[10] = " ".join(["w"] * 20)  # a new longest text: every share changes
    _, record = rerun_with(tmp_path, corpus, rows)
    assert ran(record, "size") == (2, 4)
    assert ran(record, "share") == (6, 0) and ran(record, "tag") == (6, 0)
    assert record["changed"] == [True] * 6
    assert {r["share"] for r in api.output_table(record).to_pylist() if r["id"] == 610} == {1.0}


def test_the_ray_executor_writes_the_same_artifacts(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    record = run_json(
        *run_args(PIPELINE, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu")
    )
    assert record["status"] == "SUCCEEDED" and ran(record, "share") == (6, 0)
    assert digests(record) == digests(clean["record"])
    assert record["accounting"]["total"] == clean["record"]["accounting"]["total"]


@pytest.mark.slow
def test_a_driver_killed_during_the_rejoin_resumes_to_the_clean_output(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    args = [
        *run_args(PIPELINE, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu"),
        "--executor",
        "local",
    ]
    segments = tmp_path / "state" / "stages" / "share" / "segments"

    def reached() -> bool:  # one rejoin batch committed, 5 to go at 2 s each
        return segments.exists() and any(
            p.read_text().strip() for p in segments.iterdir() if p.suffix == ".jsonl"
        )

    proc = processes.start_until([*args, "--set", "share.delay_s=2"], reached, timeout=120)
    assert proc.poll() is None, "the run finished before it could be killed"
    processes.kill_group(proc)
    resumed = run_json(*args)
    assert resumed["status"] == "SUCCEEDED"
    assert digests(resumed) == digests(clean["record"])
    assert resumed["accounting"]["total"] == clean["record"]["accounting"]["total"]
    assert ran(resumed, "size") == (0, 6) and ran(resumed, "longest.reduce") == (0, 1)
    share_run, share_skip = ran(resumed, "share")
    assert share_skip >= 1 and share_run + share_skip == 6


def test_a_rejoin_stage_first_is_a_config_error():
    stages = load_pipeline(PIPELINE).stages
    with pytest.raises(ConfigError, match="first stage"):
        expand([StageSpec(stages[2], stages[2].resources)])


@pytest.mark.slow
def test_state_and_context_on_s3_give_the_same_output(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str], s3_server: str, s3_bucket: str
):
    profile = tmp_path / "s3.toml"
    profile.write_text(
        (packaged_profiles() / "local-cpu.toml").read_text()
        + '\n[storage_options]\nkey = "k"\nsecret = "s"\n'
        + f'[storage_options.client_kwargs]\nendpoint_url = "{s3_server}"\n'
    )
    args = [
        "run", PIPELINE, "--profile", str(profile), "--set", f"batch_rows={BATCH}",
        "--state", f"s3://{s3_bucket}/state", "--output", f"s3://{s3_bucket}/out",
        *[a for path in corpus for a in ("--input", path)],
    ]  # fmt: skip
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": s3_server}}

    def on_s3(record: dict[str, Any]) -> list[str]:
        entries = api.read_manifest(record["manifest"], options)["batches"]
        return [e["artifact"]["digest"] for e in entries]

    first = run_json(*args)  # on Ray: each actor reads the context from S3
    assert first["status"] == "SUCCEEDED" and first["manifest"].startswith("s3://")
    assert on_s3(first) == digests(clean["record"])
    again = run_json(*args, "--executor", "local")
    assert all(ran(again, s)[0] == 0 for s in STAGES)
    assert on_s3(again) == digests(clean["record"])


@pytest.mark.slow
def test_an_input_changed_before_the_rejoin_fails_the_run_and_a_rerun_is_right(
    tmp_path: Path, corpus: list[str]
):
    inputs = [str(tmp_path / "in" / Path(p).name) for p in corpus]
    (tmp_path / "in").mkdir()
    for p, q in zip(corpus, inputs, strict=True):
        shutil.copy(p, q)
    args = [
        *run_args(PIPELINE, tmp_path, inputs, f"batch_rows={BATCH}", profile="local-cpu"),
        "--executor",
        "local",
    ]
    reduce = tmp_path / "state" / "stages" / "longest.map" / "segments"

    def reached() -> bool:  # every batch went through size and longest.map
        return (
            reduce.exists()
            and sum(
                len(p.read_text().splitlines()) for p in reduce.iterdir() if p.suffix == ".jsonl"
            )
            >= FILES * 2
        )

    proc = processes.start_until(
        [*args, "--set", "longest.delay_s=4", "--json"], reached, timeout=120, pipe=True
    )
    rows = texts(2)
    rows[10] = "w w"
    write(tmp_path / "in", 2, rows)  # while the global stage runs
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and json.loads(out)["error"]["type"] == "InputError"
    (job,) = api.open_state(str(tmp_path / "state")).list_jobs()
    assert job["status"] == "FAILED"
    assert "rejoin stage share must read the input again" in err and "part-2.jsonl" in err
    again = run_json(*args)
    assert again["status"] == "SUCCEEDED" and ran(again, "size") == (2, 4)
    fresh = run_local(PIPELINE, inputs, tmp_path / "fresh")
    assert digests(again) == digests(fresh)
