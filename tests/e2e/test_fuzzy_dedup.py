"""pipelines/fuzzy_dedup.py end to end: near-duplicates found and far variants kept
(precision and recall on a corpus with planted clusters), one document kept per
cluster, an all-skipped rerun, a threshold change that reuses the signatures, and
the same bytes from the Ray executor."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import fuzzy_dedup  # pipelines/ is on sys.path (tests/conftest.py)
import pytest

import winnow
from tests import processes
from tests.conftest import ROOT, run_args, run_json
from winnow import api
from winnow.request import RunRequest

PIPELINE = str(ROOT / "pipelines" / "fuzzy_dedup.py")
FILES, ROWS, BATCH = 3, 1_000, 500  # 2 batches per file


def write_corpus(directory: Path) -> tuple[list[str], dict[int, int]]:
    """Three JSONL files and each row's cluster (id -> cluster).

    Of the rows, ~12% are near-duplicates of an earlier original (1-3% of
    words replaced, deleted or inserted), ~6% exact copies of one, ~12% far
    variants of one (30% of words edited: a cluster of their own), the rest
    originals of 50-200 words. Copies of an original land in its batch,
    another batch and other files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(11)
    vocab = fuzzy_dedup.vocabulary(rng)
    originals: list[tuple[list[str], int]] = []
    cluster: dict[int, int] = {}
    paths = []
    for f in range(FILES):
        lines = []
        for r in range(ROWS):
            i = f * ROWS + r
            roll = rng.random()
            if originals and roll < 0.3:
                words, of = rng.choice(originals[-30:] if rng.random() < 0.3 else originals)
                if roll < 0.12:
                    words = fuzzy_dedup.edit(words, rng.uniform(0.01, 0.03), rng, vocab)
                elif roll >= 0.18:
                    words, of = fuzzy_dedup.edit(words, 0.3, rng, vocab), i
            else:
                words, of = [rng.choice(vocab) for _ in range(rng.randint(50, 200))], i
                originals.append((words, i))
            cluster[i] = of
            lines.append(json.dumps({"id": i, "text": " ".join(words)}))
        path = directory / f"part-{f:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths, cluster


def request(inputs: list[str], where: Path, *sets: str, pipeline: str = PIPELINE) -> RunRequest:
    return RunRequest(
        pipeline,
        "local-cpu",
        tuple(inputs),
        str(where / "out"),
        str(where / "state"),
        (f"batch_rows={BATCH}", *sets),
        executor="local",
    )


def run_local(inputs: list[str], where: Path, *sets: str) -> dict[str, Any]:
    return api.run(request(inputs, where, *sets), progress=False).record


def digests(record: dict[str, Any]) -> list[str]:
    return [e["artifact"]["digest"] for e in api.read_manifest(record["manifest"])["batches"]]


def ran(record: dict[str, Any], stage: str) -> tuple[int, int]:
    counts = record["counts"][stage]
    return counts["run"], counts["skipped"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[int, int]]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, corpus: Any) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("clean")
    return {"where": where, "record": run_local(corpus[0], where)}


def test_removes_near_duplicates_and_exact_copies_but_not_far_variants(
    clean: dict[str, Any], corpus: Any
):
    cluster = corpus[1]
    record = clean["record"]
    assert record["status"] == "SUCCEEDED"
    members: dict[int, list[int]] = {}
    for i, c in cluster.items():
        members.setdefault(c, []).append(i)
    dupes = {i for ids in members.values() for i in sorted(ids)[1:]}  # ids follow source order
    assert len(dupes) > 400 and len(members) > 2_000  # planted, far variants included

    gone = winnow.removed(api.open_state(str(clean["where"] / "state")), record["job_id"])
    removed = {r["id"]: r for r in gone.to_pylist()}
    right = {i for i, r in removed.items() if cluster[i] == cluster[r["duplicate_of"]]}
    precision, recall = len(right) / len(removed), len(right & dupes) / len(dupes)
    print(
        f"fuzzy_dedup: {len(cluster)} docs, {len(dupes)} duplicates planted, "
        f"precision {precision:.4f}, recall {recall:.4f}"
    )
    assert precision >= 0.99 and recall >= 0.97

    kept = api.output_table(record)
    assert kept.column_names == ["id", "text"]  # no signature, no framework column
    kept_ids = kept.column("id").to_pylist()
    assert sorted(kept_ids + list(removed)) == sorted(cluster)
    for c, ids in members.items():  # one per cluster: the lowest source position
        assert [i for i in ids if i not in removed] == [min(ids)], f"cluster {c}"
    assert all(r["duplicate_of"] not in removed for r in removed.values())
    assert all(r["file"].endswith(".jsonl") and r["row"] >= 0 for r in removed.values())
    total = record["accounting"]["total"]
    assert total["read"] == FILES * ROWS and total["unaccounted"] == 0
    assert total["filtered_by_stage"] == {"keep": len(removed)}
    assert ran(record, "minhash") == (FILES * 2, 0)
    assert ran(record, "lsh.map") == (FILES * 2, 0)
    assert ran(record, "lsh.reduce")[0] > 1  # band buckets over several partitions
    assert ran(record, "components.reduce") == (1, 0)
    assert ran(record, "keep") == (FILES * 2, 0)  # the input read again


def test_a_rerun_skips_everything(clean: dict[str, Any], corpus: Any):
    again = run_local(corpus[0], clean["where"])
    assert again["status"] == "SUCCEEDED"
    assert ran(again, "minhash") == (0, FILES * 2)
    assert ran(again, "lsh.map") == (0, FILES * 2)
    assert ran(again, "lsh.reduce") == (0, ran(clean["record"], "lsh.reduce")[0])
    assert ran(again, "components.reduce") == (0, 1)
    assert ran(again, "keep") == (0, FILES * 2)
    assert digests(again) == digests(clean["record"])
    assert api.plan(api.resolve_session(request(corpus[0], clean["where"]))).work == 0


def test_a_threshold_change_reruns_lsh_alone_and_reuses_the_signatures(
    tmp_path: Path, clean: dict[str, Any], corpus: Any
):
    where = tmp_path / "run"
    shutil.copytree(clean["where"], where)
    stricter = "lsh.threshold=0.95"
    plan = api.plan(api.resolve_session(request(corpus[0], where, stricter)))
    counts = {s.name: dict(s.counts) for s in plan.stages}
    assert counts["minhash"] == {"skip": FILES * 2}  # the signatures are reused
    assert counts["lsh.map"] == {"run": FILES * 2}

    record = run_local(corpus[0], where, stricter)
    assert record["status"] == "SUCCEEDED"
    assert ran(record, "minhash") == (0, FILES * 2)
    assert ran(record, "lsh.map") == (FILES * 2, 0)
    assert ran(record, "components.reduce") == (1, 0)
    assert ran(record, "keep") == (FILES * 2, 0)  # the removed documents changed
    before = record["accounting"]["total"]["filtered"]
    assert 0 < before < clean["record"]["accounting"]["total"]["filtered"]  # fewer pass 0.95


def test_the_ray_executor_writes_the_same_artifacts(
    tmp_path: Path, clean: dict[str, Any], corpus: Any
):
    record = run_json(
        *run_args(PIPELINE, tmp_path, corpus[0], f"batch_rows={BATCH}", profile="local-cpu")
    )
    assert record["status"] == "SUCCEEDED"
    assert record["counts"]["minhash"]["run"] == FILES * 2  # it ran, on Ray
    assert digests(record) == digests(clean["record"])
    assert record["accounting"]["total"] == clean["record"]["accounting"]["total"]


def test_an_edit_of_the_lsh_reduce_reuses_the_signatures_and_band_shards(
    tmp_path: Path, clean: dict[str, Any], corpus: Any
):
    source = Path(PIPELINE).read_text()
    edited = source.replace('"count_all")])', '"count_all")]).combine_chunks()')
    assert edited != source
    (tmp_path / "fuzzy_dedup.py").write_text(edited)
    moved = request(corpus[0], clean["where"], pipeline=str(tmp_path / "fuzzy_dedup.py"))
    plan = api.plan(api.resolve_session(moved))
    counts = {s.name: dict(s.counts) for s in plan.stages}
    assert counts["minhash"] == {"skip": FILES * 2}
    assert counts["lsh.map"] == {"skip": FILES * 2}  # the edit is in its reduce
    reduce = plan.barriers()[0].stages[0]
    assert reduce.name == "lsh.reduce" and reduce.counts["run"] == reduce.counts.total()


PACED = str(ROOT / "tests" / "pipelines" / "paced_fuzzy.py")


@pytest.mark.slow
@pytest.mark.parametrize("during", ["minhash", "lsh.reduce", "components.reduce"])
def test_a_killed_driver_resumes_to_the_clean_output(
    tmp_path: Path, clean: dict[str, Any], corpus: Any, during: str
):
    args = [
        *run_args(PACED, tmp_path, corpus[0], f"batch_rows={BATCH}", profile="local-cpu"),
        "--executor",
        "local",
    ]
    # minhash: once its first batch committed (5 more to go, 1 s each); lsh.reduce:
    # once one partition committed (1 s each); components.reduce: once every edge
    # shard committed, in the 30 s components step.
    watch = {"minhash": "minhash", "lsh.reduce": "lsh.reduce"}.get(during, "components.map")
    segments = tmp_path / "state" / "stages" / watch / "segments"

    def reached() -> bool:
        if not segments.exists():
            return False
        lines = sum(
            len(p.read_text().splitlines()) for p in segments.iterdir() if p.suffix == ".jsonl"
        )
        return lines >= (1 if during != "components.reduce" else edge_batches)

    edge_batches = ran(clean["record"], "lsh.reduce")[0]
    pace = {"minhash": "minhash.delay_s=1", "lsh.reduce": "lsh.delay_s=1"}
    pace = pace.get(during, "components.delay_s=30")
    proc = processes.start_until([*args, "--set", pace], reached, timeout=120)
    assert proc.poll() is None, "the run finished before it could be killed"
    processes.kill_group(proc)

    resumed = run_json(*args)
    assert resumed["status"] == "SUCCEEDED"
    assert digests(resumed) == digests(clean["record"])  # the same bytes as a clean run
    assert resumed["accounting"]["total"] == clean["record"]["accounting"]["total"]
    minhash_run, minhash_skip = ran(resumed, "minhash")
    assert minhash_skip >= 1 and minhash_run + minhash_skip == FILES * ROWS // BATCH
    if during != "minhash":
        assert minhash_run == 0 and ran(resumed, "lsh.map") == (0, FILES * ROWS // BATCH)
        lsh_run, lsh_skip = ran(resumed, "lsh.reduce")
        assert lsh_skip >= 1 and lsh_run + lsh_skip == edge_batches
    if during == "components.reduce":
        assert lsh_run == 0 and ran(resumed, "components.reduce") == (1, 0)
