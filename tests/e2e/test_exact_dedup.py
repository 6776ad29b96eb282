"""pipelines/exact_dedup.py, the first grouping stage: correct, identical on both
executors, skipped when unchanged, partly rerun when one file changes, and
resumable after a SIGKILL of the driver during its map side and its reduce."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import winnow
from tests import processes
from tests.conftest import ROOT, one_json, run_args, run_json
from winnow import api
from winnow.request import RunRequest

PIPELINE = str(ROOT / "pipelines" / "exact_dedup.py")
PACED = str(ROOT / "tests" / "pipelines" / "paced_dedup.py")
FILES, ROWS, BATCH = 3, 600, 250  # 3 batches per file: 250, 250, 100 rows
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def write_corpus(directory: Path) -> list[str]:
    """Three JSONL files; ~20% of rows copy an earlier row's text (same batch,
    another batch, another file), exactly or with case and spacing changed."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    texts: list[str] = []
    paths = []
    for f in range(FILES):
        lines = []
        for r in range(ROWS):
            i = f * ROWS + r
            if texts and rng.random() < 0.2:
                text = rng.choice(texts[-40:] if rng.random() < 0.3 else texts)
                variant = rng.randrange(3)
                if variant == 1:
                    text = text.upper()
                elif variant == 2:
                    text = "  " + text.replace(" ", " \t  ") + "\n"
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
                texts.append(text)
            lines.append(json.dumps({"id": i, "text": text}))
        path = directory / f"part-{f:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def reference(paths: list[str]) -> tuple[list[int], dict[int, int]]:
    """Kept ids, and removed id -> the id it duplicates, computed the plain way."""
    first: dict[str, int] = {}
    kept, removed = [], {}
    for path in sorted(paths):
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            norm = " ".join(row["text"].lower().split())
            if norm in first:
                removed[row["id"]] = first[norm]
            else:
                first[norm] = row["id"]
                kept.append(row["id"])
    return kept, removed


def run_local(pipeline: str, inputs: list[str], where: Path, *sets: str) -> dict[str, Any]:
    request = RunRequest(
        pipeline,
        "local-cpu",
        tuple(inputs),
        str(where / "out"),
        str(where / "state"),
        (f"batch_rows={BATCH}", *sets),
        executor="local",
    )
    return api.run(request, progress=False).record


def digests(record: dict[str, Any]) -> list[str]:
    return [e["artifact"]["digest"] for e in api.read_manifest(record["manifest"])["batches"]]


def ran(record: dict[str, Any], stage: str) -> tuple[int, int]:
    counts = record["counts"][stage]
    return counts["run"], counts["skipped"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("clean")
    return {"where": where, "record": run_local(PIPELINE, corpus, where)}


def test_keeps_first_occurrences_and_records_what_each_duplicate_duplicates(
    clean: dict[str, Any], corpus: list[str]
):
    record = clean["record"]
    assert record["status"] == "SUCCEEDED"
    kept, removed = reference(corpus)
    assert len(removed) > 200  # planted: in-batch, cross-batch and cross-file copies
    table = api.output_table(record)
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(kept) and len(ids) == len(set(ids))
    assert table.column_names == ["id", "text"]  # the framework's columns are dropped
    state = api.open_state(str(clean["where"] / "state"))
    gone = winnow.removed(state, record["job_id"]).to_pylist()
    assert {r["id"]: r["duplicate_of"] for r in gone} == removed
    assert all(r["file"].endswith(".jsonl") and r["row"] >= 0 for r in gone)
    total = record["accounting"]["total"]
    assert total["read"] == FILES * ROWS and total["unaccounted"] == 0
    assert total["passed"] == len(kept)
    assert total["filtered_by_stage"] == {"dedup.reduce": len(removed)}
    assert ran(record, "dedup.map") == (FILES * 3, 0)
    assert ran(record, "dedup.reduce") == (8, 0)  # 8 partitions, none empty
    assert record["rows_out"] == len(kept)


def test_a_rerun_skips_every_map_batch_and_partition(clean: dict[str, Any], corpus: list[str]):
    again = run_local(PIPELINE, corpus, clean["where"])
    assert again["status"] == "SUCCEEDED"
    assert ran(again, "dedup.map") == (0, FILES * 3)
    assert ran(again, "dedup.reduce") == (0, 8)
    assert digests(again) == digests(clean["record"])
    assert again["accounting"]["total"] == clean["record"]["accounting"]["total"]
    session = api.resolve_session(
        RunRequest(
            PIPELINE,
            "local-cpu",
            tuple(corpus),
            str(clean["where"] / "out"),
            str(clean["where"] / "state"),
            (f"batch_rows={BATCH}",),
        )
    )
    plan = api.plan(session)
    assert plan.work == 0
    grouping = plan.to_dict()["grouping"]
    rows = grouping.pop("partition_rows")
    assert grouping.pop("partition_bytes")["total"] > 0
    assert grouping.pop("skew") == round(rows["max"] / rows["mean"], 2) >= 1.0
    assert rows["mean"] * 8 == clean["record"]["accounting"]["total"]["read"]
    assert grouping == {
        "stage": "dedup",
        "partitions": 8,
        "declared_partitions": 8,
        "global": False,
        "map_batches": FILES * 3,
        "reduce_partitions": 8,
        "pending": False,
    }


def test_the_ray_executor_writes_the_same_artifacts(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    record = run_json(
        *run_args(PIPELINE, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu")
    )
    assert record["status"] == "SUCCEEDED"
    assert digests(record) == digests(clean["record"])
    assert record["accounting"]["total"] == clean["record"]["accounting"]["total"]


def test_one_changed_file_reruns_its_map_batches_and_the_partitions_it_touched(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    inputs = [str(tmp_path / "in" / Path(p).name) for p in corpus]
    (tmp_path / "in").mkdir()
    for src, dst in zip(corpus, inputs, strict=True):
        shutil.copy(src, dst)
    where = tmp_path / "run"
    shutil.copytree(clean["where"], where)  # its state and output, for a rerun
    first = run_local(PIPELINE, inputs, where)  # the same rows, under the copies' URLs
    assert first["status"] == "SUCCEEDED" and ran(first, "dedup.map")[0] == FILES * 3
    # One new text in the last file: its one row moves between two partitions at most.
    lines = Path(inputs[-1]).read_text().splitlines()
    lines[5] = json.dumps({"id": json.loads(lines[5])["id"], "text": "a brand new text"})
    time.sleep(0.01)
    Path(inputs[-1]).write_text("\n".join(lines) + "\n")

    plan = api.plan(
        api.resolve_session(
            RunRequest(
                PIPELINE,
                "local-cpu",
                tuple(inputs),
                str(where / "out"),
                str(where / "state"),
                (f"batch_rows={BATCH}",),
            )
        )
    )
    assert plan.to_dict()["grouping"]["pending"]  # the changed file's map batches run first
    assert plan.stages[0].counts == {"run": 3, "skip": 6}

    after = run_local(PIPELINE, inputs, where)
    assert after["status"] == "SUCCEEDED"
    assert ran(after, "dedup.map") == (3, 6)  # the changed file's three batches
    reduce_run, reduce_skip = ran(after, "dedup.reduce")
    assert 1 <= reduce_run <= 2 and reduce_run + reduce_skip == 8
    fresh = run_local(PIPELINE, inputs, tmp_path / "fresh")  # a clean run of the new inputs
    assert digests(after) == digests(fresh)
    kept, _ = reference(inputs)
    assert sorted(api.output_table(after).column("id").to_pylist()) == sorted(kept)


@pytest.mark.parametrize("side", ["map", "reduce"])
def test_a_killed_driver_resumes_to_the_clean_output(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str], side: str
):
    args = [
        *run_args(PACED, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu"),
        "--executor",
        "local",
    ]
    segments = tmp_path / "state" / "stages" / f"dedup.{side}" / "segments"

    def committed() -> bool:  # a segment published (not one still under its temporary name)
        return segments.exists() and any(p.suffix == ".jsonl" for p in segments.iterdir())

    proc = processes.start_until([*args, "--set", "dedup.delay_s=0.4"], committed, timeout=120)
    assert proc.poll() is None, "the run finished before it could be killed"
    processes.kill_group(proc)

    resumed = run_json(*args)
    assert resumed["status"] == "SUCCEEDED"
    assert digests(resumed) == digests(clean["record"])  # the same bytes as a clean run
    assert resumed["accounting"]["total"] == clean["record"]["accounting"]["total"]
    map_run, map_skip = ran(resumed, "dedup.map")
    assert map_skip >= 1 and map_run + map_skip == FILES * 3
    if side == "reduce":
        assert map_run == 0
        assert 1 <= ran(resumed, "dedup.reduce")[1] < 8  # committed partitions are kept


@pytest.mark.slow
def test_a_worker_killed_during_the_reduce_reruns_only_its_partition(
    tmp_path: Path, clean: dict[str, Any], corpus: list[str]
):
    args = [
        *run_args(PACED, tmp_path, corpus, f"batch_rows={BATCH}", profile="local-cpu"),
        "--set",
        "dedup.delay_s=0.5",
        "--json",
    ]
    reduce = tmp_path / "state" / "stages" / "dedup.reduce" / "segments"
    proc = processes.start_until(
        args, processes.has_files(reduce), timeout=180, step=0.05, pipe=True, session=False
    )
    victims = processes.stage_workers(proc.pid)  # the reduce side's actors, mid-partition
    assert victims and proc.poll() is None, "the reduce finished before it could be hit"
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    record = one_json(out)
    assert record["status"] == "SUCCEEDED"
    assert record["counts"]["dedup.reduce"]["retried"] >= 1
    assert ran(record, "dedup.map") == (FILES * 3, 0)
    assert ran(record, "dedup.reduce")[0] == 8  # each partition reduced once to its commit
    assert digests(record) == digests(clean["record"])
    assert record["accounting"]["total"] == clean["record"]["accounting"]["total"]
