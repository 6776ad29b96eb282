"""Several barriers in one pipeline (tests/pipelines/dedup_global.py): a grouping
stage, a per-batch stage on its partitions, a global stage over all of them and a
per-batch stage after it. Correct, skipped when unchanged, partly rerun when one
file changes, the same on Ray, resumable after a SIGKILL during the global stage,
and visible in ``plan``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests import processes
from tests.conftest import ROOT, run_args, run_cli, run_json
from tests.e2e.test_exact_dedup import BATCH, digests, ran, reference, run_local, write_corpus
from winnow import api
from winnow.profile import packaged_profiles

PIPELINE = str(ROOT / "tests" / "pipelines" / "dedup_global.py")
PROFILE = packaged_profiles() / "local-cpu.toml"
STAGES = ["dedup.map", "dedup.reduce", "words", "rank.map", "rank.reduce", "label"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("clean")
    return {"where": where, "record": run_local(PIPELINE, corpus, where)}


def test_each_barrier_sees_what_it_must_and_the_output_is_right(
    clean: dict[str, Any], corpus: list[str]
):
    record = clean["record"]
    assert record["status"] == "SUCCEEDED"
    assert list(record["counts"]) == STAGES
    kept, _ = reference(corpus)
    table = api.output_table(record)
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == sorted(kept)
    assert [r["rank"] for r in rows] == list(range(len(kept)))  # global: over every partition
    assert {r["kept"] for r in rows} == {len(kept)}
    assert all(r["label"] == ("long" if r["words"] > 6 else "short") for r in rows)
    assert record["accounting"]["total"]["unaccounted"] == 0
    assert record["accounting"]["total"]["passed"] == len(kept)
    first, second = record["groupings"]
    assert (first["stage"], first["partitions"], first["map_batches"]) == ("dedup", 3, 9)
    assert (second["stage"], second["partitions"], second["map_batches"]) == ("rank", 1, 3)
    assert second["reduce_partitions"] == 1 and second["partition_rows"]["max"] == len(kept)
    assert first["skew"] >= 1.0 and record["grouping"] == first


def test_a_rerun_skips_every_stage_of_every_segment(clean: dict[str, Any], corpus: list[str]):
    again = run_local(PIPELINE, corpus, clean["where"])
    assert all(ran(again, s)[0] == 0 for s in STAGES)
    assert digests(again) == digests(clean["record"])


def test_one_changed_file_reruns_what_it_reaches(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    work = tmp_path / "work"
    inputs = [str(tmp_path / Path(p).name) for p in corpus]
    for src, dst in zip(corpus, inputs, strict=True):
        shutil.copy(src, dst)
    assert run_local(PIPELINE, inputs, work)["status"] == "SUCCEEDED"
    lines = Path(inputs[2]).read_text().splitlines()
    row = json.loads(lines[-1])
    row["text"] = "a brand new text nobody else has"
    Path(inputs[2]).write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")
    after = run_local(PIPELINE, inputs, work)
    assert after["status"] == "SUCCEEDED"
    assert ran(after, "dedup.map") == (3, 6)  # the changed file's batches
    assert ran(after, "dedup.reduce")[0] <= 2  # the partitions its rows fall in
    assert ran(after, "rank.reduce") == (1, 0)  # its input changed: it reruns
    kept, _ = reference(inputs)
    assert sorted(api.output_table(after).column("id").to_pylist()) == sorted(kept)


def test_plan_shows_every_barrier_pending_then_planned(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    inputs = [arg for path in corpus for arg in ("--input", path)]
    args = ["plan", PIPELINE, "--profile", "local-cpu", *inputs]
    fresh = run_json(*args, "--set", f"batch_rows={BATCH}", "--state", str(tmp_path / "s"))
    pending = [s for s in fresh["stages"] if s.get("pending")]
    assert [s["name"] for s in pending] == STAGES[1:]
    assert [g["pending"] for g in fresh["groupings"]] == [True, True]
    where = ["--state", str(clean["where"] / "state"), "--output", str(clean["where"] / "out")]
    done = run_json(*args, "--set", f"batch_rows={BATCH}", *where)
    assert [s["skip"] for s in done["stages"]] == [9, 3, 3, 3, 1, 1]
    assert done["groupings"][1]["skew"] == 1.0
    text = run_cli(*args, "--set", f"batch_rows={BATCH}", *where).stdout
    assert "grouping stage rank: 3 map batches -> 1 partitions" in text


def test_rerun_of_the_global_stage_recomputes_it_and_what_follows(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    work = tmp_path / "work"
    shutil.copytree(clean["where"], work)
    args = run_args(PIPELINE, work, corpus, f"batch_rows={BATCH}", profile="local-cpu")
    again = run_json(*args, "--executor", "local", "--rerun", "rank")
    assert [ran(again, s)[0] for s in STAGES] == [0, 0, 0, 3, 1, 1]
    assert digests(again) == digests(clean["record"])


@pytest.mark.slow
def test_a_driver_killed_in_the_global_stage_resumes_to_the_clean_output(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    args = [
        *run_args(PIPELINE, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu"),
        "--executor",
        "local",
    ]
    rank_map = tmp_path / "state" / "stages" / "rank.map" / "segments"

    def in_global() -> bool:  # the global stage's map side committed: its reduce is next
        return rank_map.exists() and any(p.suffix == ".jsonl" for p in rank_map.iterdir())

    proc = processes.start_until([*args, "--set", "rank.delay_s=30"], in_global, timeout=120)
    assert proc.poll() is None, "the run finished before it could be killed"
    processes.kill_group(proc)
    resumed = run_json(*args)
    assert resumed["status"] == "SUCCEEDED"
    assert digests(resumed) == digests(clean["record"])
    assert ran(resumed, "dedup.map") == (0, 9) and ran(resumed, "dedup.reduce") == (0, 3)
    assert ran(resumed, "rank.reduce") == (1, 0)
    assert resumed["accounting"]["total"] == clean["record"]["accounting"]["total"]


@pytest.mark.slow
def test_the_ray_executor_writes_the_same_artifacts(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    args = run_args(PIPELINE, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu")
    on_ray = run_json(*args)
    assert on_ray["status"] == "SUCCEEDED"
    assert digests(on_ray) == digests(clean["record"])
    assert [ran(on_ray, s)[0] for s in STAGES] == [9, 3, 3, 3, 1, 1]


@pytest.mark.slow
def test_state_and_shards_on_s3_give_the_same_output(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str], s3_server: str, s3_bucket: str
):
    profile = tmp_path / "s3.toml"
    profile.write_text(
        PROFILE.read_text()
        + '\n[storage_options]\nkey = "k"\nsecret = "s"\n'
        + f'[storage_options.client_kwargs]\nendpoint_url = "{s3_server}"\n'
    )
    args = [
        "run",
        PIPELINE,
        "--profile",
        str(profile),
        "--executor",
        "local",
        "--set",
        f"batch_rows={BATCH}",
        "--state",
        f"s3://{s3_bucket}/state",
        "--output",
        f"s3://{s3_bucket}/out",
        *[a for path in corpus for a in ("--input", path)],
    ]
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": s3_server}}

    def on_s3(record: dict[str, Any]) -> list[str]:
        entries = api.read_manifest(record["manifest"], options)["batches"]
        return [e["artifact"]["digest"] for e in entries]

    first = run_json(*args)
    assert first["status"] == "SUCCEEDED" and first["manifest"].startswith("s3://")
    assert on_s3(first) == digests(clean["record"])  # shards and partitions read from S3
    again = run_json(*args)
    assert all(ran(again, s)[0] == 0 for s in STAGES)
    assert on_s3(again) == digests(clean["record"])


def test_the_report_shows_each_barriers_partitions_and_skew(clean: dict[str, Any]):
    from winnow.tools import report

    record = clean["record"]
    state = api.open_state(str(clean["where"] / "state"))
    html = report.build(state, record["job_id"])
    assert "Grouping stages: partitions" in html
    section = html[html.index("Grouping stages: partitions") :]
    section = section[: section.index("</table>")]
    for g in record["groupings"]:
        assert f"<td class=''>{g['stage']}</td>" in section
        assert f"<td class='n'>{g['skew']}</td>" in section


@pytest.mark.slow
def test_partitions_follow_the_input_size_and_an_oversized_one_is_named(tmp_path: Path):
    texts = [hashlib.sha256(str(i).encode()).hexdigest() * 3 for i in range(9_000)]
    rows = [{"id": i, "text": texts[i % 9_000]} for i in range(30_000)]
    corpus = tmp_path / "big.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ~6.5 MB, 9,000 distinct
    where = ["--state", str(tmp_path / "s"), "--output", str(tmp_path / "o")]
    sets = ["--set", "partition_mb=1", "--set", "dedup.partitions=1", "--set", "batch_rows=5000"]
    args = [PIPELINE, "--profile", "local-cpu", "--input", str(corpus), *where, *sets]
    planned = run_json("plan", *args)["groupings"]
    assert planned[0]["declared_partitions"] == 1 and planned[0]["partitions"] == 8
    assert planned[1]["partitions"] == planned[1]["declared_partitions"] == 1  # global
    summary = run_json("run", *args, "--executor", "local")
    assert summary["status"] == "SUCCEEDED" and summary["rows_out"] == 9_000
    record = api.open_state(str(tmp_path / "s")).read_job(summary["job_id"])
    first, second = record["groupings"]
    assert first["reduce_partitions"] == 8 and "over_budget" not in first
    assert second["over_budget"] == [0]  # the global stage sees all 9,000 rows at once
    text = run_cli("plan", *args)
    out, err = " ".join(text.stdout.split()), " ".join(text.stderr.split())
    assert "raised from 1 for the input's size" in out
    assert "rank: partition(s) 0 hold more than partition_mb (1 MB)" in err
    assert "reduces its whole input at once" in err
