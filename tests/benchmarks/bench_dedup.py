"""Dedup benchmark: Winnow vs datatrove (fuzzy) and vs Ray Data (exact), with ground truth.

Not a pytest test (run it directly, or ``make bench-dedup``)::

    uv run --group bench python tests/benchmarks/bench_dedup.py
    uv run --group bench python tests/benchmarks/bench_dedup.py --docs 3000

(The bench group holds datatrove with ``orjson``, which its ``JsonlReader``
requires, and ``spacy``: its default English word tokenizer is spaCy's blank
English. Without spacy the datatrove run uses a whitespace tokenizer
instead, which is faster than its default, and says so.)

Input: ``--docs`` documents (default 60,000) in ``--files`` JSONL files
(default 8), ``{"id": int, "text": str}``, generated deterministically once
into ``.bench/`` with ``pipelines/fuzzy_dedup.py``'s ``sample_inputs``
recipe: about 10% of documents are a near copy of an earlier original (1-3%
of words edited), 5% an exact copy, 5% a far variant (30% edited: not a
duplicate), the rest new originals of 50-200 words (``--words``) from a
4,000-word vocabulary: about 875 bytes a document, 52 MB at the default size
(the issue's datatrove figure, 133 s, was for 61,000 documents of 113 MB:
``--words 100 400`` comes near that). The generator records each document's
cluster (an original with its near and exact copies; a far variant is its
own cluster), the ground truth.

Fuzzy dedup, side by side on that corpus:

* Winnow: ``winnow run fuzzy_dedup --input 'DIR/*.jsonl' --profile local-cpu
  --state S --output O --json`` (MinHash, 128 values of 3-word shingles; LSH
  29 bands x 4 rows, chosen for threshold 0.6, a pair counting when it shares
  4 buckets; connected components of the edges, the lowest source position
  kept; the input read again to drop the removed). Kept ids are read from the
  run's output artifacts; the removed rows (``winnow.removed``) are checked
  against them.
* datatrove 0.10: its four MinHash steps (``MinhashDedupSignature ->
  MinhashDedupBuckets -> MinhashDedupCluster -> MinhashDedupFilter``), each a
  ``LocalPipelineExecutor`` with 2 workers (signatures and filter: 2 tasks;
  buckets: one task per bucket, as it requires; cluster: 1 task), the default
  ``MinhashConfig`` (5-grams, 14 buckets x 8 hashes, 64-bit xxhash), reading the
  same JSONL (``JsonlReader``, the id kept as the document id) and writing
  kept documents with ``JsonlWriter`` (its default gzip).

Scoring, per ground-truth cluster of size s with k members kept: every
removal is correct when k >= 1, else s - 1 of them are. Precision = correct
removals / removals; recall = correct removals / true duplicates (sum of
s - 1). Clusters that keep no member or (size > 1) more than one are counted.

Exact dedup: Winnow's ``exact_dedup`` pipeline vs Ray Data (``read_json ->
map_batches`` adding the BLAKE2b-128 digest of the normalized text, the same
normalization as the pipeline: lower case, whitespace runs as one space,
trimmed -> ``groupby(digest).map_groups`` keeping the lowest id, which is the
lowest source position here -> ``write_parquet``). Both must remove exactly
the documents whose normalized text an earlier one has (known from the
generator).

Each engine runs in its own subprocess; ``wall s`` is that whole process
(interpreter start, imports, Ray start and stop included). docs/s and MB/s
(MB = 10^6 bytes of UTF-8 text) use it. Peak RSS is polled (psutil and
``/proc``): ``driver`` is the launched process alone, ``tree`` the largest sum
over it and all its descendants (Ray's raylet and workers, datatrove's
worker processes; shared pages count once per process).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from harness import ROOT, last_json, load, run_process, tail, versions

sys.path.insert(0, str(ROOT / "pipelines"))
from fuzzy_dedup import edit, vocabulary  # the sample corpus's recipe, word for word

PACKAGES = ("winnow", "datatrove", "ray", "pyarrow", "numpy", "spacy")
GENERATOR_VERSION = "v1"  # bump when the generator changes: the cache dir changes with it
SEED = 24
RESULT_MARK = "BENCH_RESULT "
TARGET_RATIO = 10.0  # Winnow's fuzzy docs/s over datatrove's, at equal or better recall
ENGINES = ("winnow_fuzzy", "winnow_fuzzy_local", "datatrove", "winnow_exact", "raydata_exact")


# --------------------------------------------------------------------------
# Corpus and ground truth (generated once into .bench/)
# --------------------------------------------------------------------------


def ensure_corpus(
    data_root: Path, docs: int, files: int, length: tuple[int, int] = (50, 200)
) -> tuple[Path, dict[str, Any]]:
    """The JSONL folder and its facts (ground truth included); generated on first use."""
    name = f"dedup-{GENERATOR_VERSION}-n{docs}-f{files}"
    if length != (50, 200):
        name += f"-w{length[0]}-{length[1]}"
    folder = data_root / name
    facts_path = folder / "truth.json"
    if facts_path.exists():
        return folder / "data", json.loads(facts_path.read_text())
    print(f"generating {docs:,} documents in {folder} ...", flush=True)
    t0 = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    rng = random.Random(SEED)
    vocab = vocabulary(rng)
    originals: list[tuple[int, list[str]]] = []  # (cluster, words)
    cluster = np.zeros(docs, np.int64)
    kind = np.zeros(docs, np.int8)  # 0 original, 1 near, 2 exact, 3 far
    seen: set[str] = set()
    exact_removed = 0
    text_bytes = 0
    per_file = -(-docs // files)
    for f in range(files):
        lines = []
        for i in range(f * per_file, min(docs, (f + 1) * per_file)):
            roll = rng.random()
            if originals and roll < 0.2:
                c, words = rng.choice(originals)
                if roll < 0.1:
                    words, kind[i] = edit(words, rng.uniform(0.01, 0.03), rng, vocab), 1
                elif roll < 0.15:
                    kind[i] = 2
                else:  # far variant: not a duplicate, its own cluster
                    words, c, kind[i] = edit(words, 0.3, rng, vocab), i, 3
                cluster[i] = c
            else:
                words = [rng.choice(vocab) for _ in range(rng.randint(*length))]
                originals.append((i, words))
                cluster[i] = i
            text = " ".join(words)
            exact_removed += text in seen
            seen.add(text)
            text_bytes += len(text.encode())
            lines.append(json.dumps({"id": i, "text": text}))
        path = folder / "data" / f"part-{f:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n")
    sizes = np.bincount(cluster, minlength=docs)
    facts = {
        "docs": docs,
        "files": files,
        "text_bytes": text_bytes,
        "file_bytes": sum(p.stat().st_size for p in (folder / "data").iterdir()),
        "cluster": cluster.tolist(),
        "kinds": {k: int((kind == v).sum()) for k, v in (("original", 0), ("near", 1))}
        | {k: int((kind == v).sum()) for k, v in (("exact", 2), ("far", 3))},
        "true_duplicates": int((sizes[sizes > 0] - 1).sum()),
        "dup_clusters": int((sizes > 1).sum()),
        "exact_removed": exact_removed,
    }
    facts_path.write_text(json.dumps(facts))
    print(f"generated in {time.perf_counter() - t0:.1f}s", flush=True)
    return folder / "data", facts


def score(kept_ids: np.ndarray, facts: dict[str, Any]) -> dict[str, Any]:
    """Precision, recall and cluster violations of a kept set against the ground truth."""
    cluster = np.asarray(facts["cluster"], np.int64)
    n = len(cluster)
    kept = np.zeros(n, bool)
    kept[kept_ids] = True
    size = np.bincount(cluster, minlength=n)
    kept_per = np.bincount(cluster, weights=kept, minlength=n).astype(np.int64)
    removed_per = size - kept_per
    live = size > 0
    correct = np.where(kept_per >= 1, removed_per, np.maximum(size - 1, 0))[live].sum()
    removed = int(removed_per.sum())
    truth = int(facts["true_duplicates"])
    return {
        "kept": int(kept.sum()),
        "removed": removed,
        "correct": int(correct),
        "precision": correct / removed if removed else 1.0,
        "recall": correct / truth if truth else 1.0,
        "none_kept": int((live & (kept_per == 0)).sum()),
        "over_kept": int(((size > 1) & (kept_per > 1)).sum()),
        "duplicate_ids": int(len(kept_ids) - len(np.unique(kept_ids))),
    }


# --------------------------------------------------------------------------
# Subprocesses: run, time, poll RSS
# --------------------------------------------------------------------------


def winnow_kept_ids(record: dict[str, Any]) -> np.ndarray:
    """The ``id`` column of a job's output artifacts (the kept rows)."""
    from winnow.api import read_manifest
    from winnow.storage.fs import resolve

    ids = []
    for entry in read_manifest(record["manifest"])["batches"]:
        if not entry["artifact"]:
            continue
        fs, path = resolve(entry["artifact"]["uri"], {})
        with fs.open(path, "rb") as fh:
            ids.append(np.asarray(pq.read_table(fh, columns=["id"]).column("id")))
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def run_winnow(
    pipeline: str,
    work: Path,
    input_dir: Path,
    timeout: float,
    sets: list[str],
    executor: str = "ray",
) -> dict[str, Any]:
    out, state = work / f"{pipeline}-{executor}-output", work / f"{pipeline}-{executor}-state"
    cmd = [
        sys.executable, "-m", "winnow.cli", "run", pipeline,
        "--input", f"{input_dir}/*.jsonl",
        "--profile", "local-cpu",
        "--state", str(state),
        "--output", str(out),
        "--json",
        "--executor", executor,
    ]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    print(f"running winnow-{pipeline}: {' '.join(cmd)}", flush=True)
    proc = run_process(cmd, work, f"winnow-{pipeline}", timeout, tree=True)
    record = last_json(proc["stdout"])
    res: dict[str, Any] = {
        "rc": proc["rc"],
        "wall_s": proc["process_s"],
        "driver_rss": proc["peak_rss"],
        "tree_rss": proc["tree_rss"],
    }
    res["command"] = cmd
    res["ok"] = proc["rc"] == 0 and bool(record) and record.get("status") == "SUCCEEDED"
    if not res["ok"]:
        res["error"] = tail(proc["stderr"]) + "\n" + tail(proc["stdout"], 5)
        return res
    assert record is not None
    res["engine_s"] = record.get("wall_s")
    res["job_id"] = record.get("job_id")
    res["kept_ids"] = winnow_kept_ids(record)
    import winnow

    removed = winnow.removed(winnow.open_state(str(state)), record["job_id"])
    res["removed_rows"] = removed.num_rows
    if removed.num_rows:
        res["removed_ids"] = np.asarray(removed.column("id"))
        res["duplicate_of"] = np.asarray(removed.column("duplicate_of"))
    res["stages"] = {
        name: round(c.get("busy_s") or 0.0, 2) for name, c in (record.get("counts") or {}).items()
    }
    return res


# --------------------------------------------------------------------------
# Worker side (inside the subprocess): datatrove and Ray Data
# --------------------------------------------------------------------------


def _datatrove_adapter(
    reader: Any, data: dict[str, Any], path: str, id_in_file: Any
) -> dict[str, Any]:
    """JSONL row -> datatrove document, the id also in the metadata.

    (Its writer drops falsy fields, so document id 0 would lose a top-level id.)
    """
    return {"text": data["text"], "id": str(data["id"]), "metadata": {"id": data["id"]}}


def worker_datatrove(input_dir: str, work: str, workers: int) -> dict[str, Any]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.word_tokenizers import WordTokenizer

    language: Any = "en"
    tokenizer = "spaCy blank English (datatrove's default)"
    try:
        import spacy  # noqa: F401
    except ImportError:

        class Whitespace(WordTokenizer):
            def word_tokenize(self, text: str) -> list[str]:
                return text.split()

            def sent_tokenize(self, text: str) -> list[str]:
                return [text]

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]

        language = Whitespace("en")
        tokenizer = "whitespace (spacy missing: faster than datatrove's default)"

    config = MinhashConfig()
    base = Path(work)

    def reader() -> JsonlReader:
        return JsonlReader(input_dir, glob_pattern="*.jsonl", adapter=_datatrove_adapter)

    steps = [
        (
            "signatures",
            [reader(), MinhashDedupSignature(str(base / "sigs"), config=config, language=language)],
            workers,
        ),
        (
            "buckets",
            [MinhashDedupBuckets(str(base / "sigs"), str(base / "buckets"), config=config)],
            config.num_buckets,
        ),
        (
            "cluster",
            [MinhashDedupCluster(str(base / "buckets"), str(base / "remove"), config=config)],
            1,
        ),
        (
            "filter",
            [reader(), MinhashDedupFilter(str(base / "remove")), JsonlWriter(str(base / "kept"))],
            workers,
        ),
    ]
    times = {}
    t0 = time.perf_counter()
    for name, pipeline, tasks in steps:
        t = time.perf_counter()
        LocalPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=min(workers, tasks),
            logging_dir=str(base / "logs" / name),
        ).run()
        times[name] = time.perf_counter() - t
    total = time.perf_counter() - t0
    kept = []
    for path in sorted(glob.glob(str(base / "kept" / "*.jsonl*"))):
        opener: Any = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as fh:
            kept.extend(json.loads(line)["metadata"]["id"] for line in fh if line.strip())
    np.save(base / "kept_ids.npy", np.asarray(kept, np.int64))
    return {
        "engine_s": total,
        "stages": times,
        "tokenizer": tokenizer,
        "kept_ids_file": str(base / "kept_ids.npy"),
    }


def normalized_digests(text: pa.Array) -> pa.Array:
    """BLAKE2b-128 of each text, lower-cased, whitespace runs as one space, trimmed."""
    text = pc.utf8_lower(pc.fill_null(text, ""))
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
    return pa.array(
        [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in text.to_pylist()],
        pa.binary(16),
    )


def worker_raydata(input_dir: str, work: str, workers: int) -> dict[str, Any]:
    import logging

    import ray
    import ray.data

    def add_digest(batch: pa.Table) -> pa.Table:
        return batch.append_column("digest", normalized_digests(batch.column("text")))

    def keep_first(group: pa.Table) -> pa.Table:
        first = int(np.argmin(np.asarray(group.column("id"))))
        return group.slice(first, 1).drop_columns(["digest"])

    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.read_json(input_dir)
    ds = ds.map_batches(add_digest, batch_format="pyarrow")
    ds = ds.groupby("digest").map_groups(keep_first, batch_format="pyarrow")
    out = Path(work) / "kept"
    ds.write_parquet(str(out))
    ray.shutdown()
    total = time.perf_counter() - t0
    ids = [
        np.asarray(pq.read_table(p, columns=["id"]).column("id")) for p in out.rglob("*.parquet")
    ]
    kept = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    np.save(Path(work) / "kept_ids.npy", kept)
    return {"engine_s": total, "kept_ids_file": str(Path(work) / "kept_ids.npy")}


def run_worker(
    engine: str, work: Path, input_dir: Path, workers: int, timeout: float
) -> dict[str, Any]:
    folder = work / engine
    folder.mkdir()
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--worker", engine, "--input", str(input_dir), "--work", str(folder),
        "--workers", str(workers),
    ]  # fmt: skip
    print(f"running {engine}: {' '.join(cmd)}", flush=True)
    proc = run_process(cmd, work, engine, timeout, tree=True)
    result = last_json(proc["stdout"], RESULT_MARK)
    res: dict[str, Any] = {
        "rc": proc["rc"],
        "wall_s": proc["process_s"],
        "driver_rss": proc["peak_rss"],
        "tree_rss": proc["tree_rss"],
    }
    res["ok"] = proc["rc"] == 0 and result is not None
    if not res["ok"]:
        res["error"] = tail(proc["stderr"]) + "\n" + tail(proc["stdout"], 5)
        return res
    assert result is not None
    res.update(result)
    res["kept_ids"] = np.load(result["kept_ids_file"])
    return res


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "-" if not n else f"{n / 2**20:,.0f}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))


def _speed_cells(r: dict[str, Any], facts: dict[str, Any]) -> tuple[str, str, str, str]:
    if not r.get("ok"):
        return ("FAILED", "-", "-", "-")
    wall = r["wall_s"]
    eng = r.get("engine_s")
    return (
        f"{wall:.1f}",
        "-" if eng is None else f"{eng:.1f}",
        f"{facts['docs'] / wall:,.0f}",
        f"{facts['text_bytes'] / 1e6 / wall:,.2f}",
    )


def print_report(results: dict[str, Any], facts: dict[str, Any]) -> bool:
    """Print the tables; return whether every run succeeded and checked out."""
    print()
    print("=" * 100)
    k = facts["kinds"]
    print(
        f"Corpus: {facts['docs']:,} docs in {facts['files']} JSONL files, "
        f"{facts['text_bytes'] / 1e6:,.1f} MB of text ({facts['file_bytes'] / 1e6:,.1f} MB on "
        f"disk); {k['original']:,} originals, {k['near']:,} near copies, {k['exact']:,} exact "
        f"copies, {k['far']:,} far variants; {facts['true_duplicates']:,} true duplicates in "
        f"{facts['dup_clusters']:,} clusters; {facts['exact_removed']:,} exact repeats"
    )
    print(
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{results['load_before']} before / {results['load_after']} after"
    )
    print(f"Versions: {results['versions']}")
    all_ok = True

    if {"winnow_fuzzy", "winnow_fuzzy_local", "datatrove"} & set(results):
        all_ok &= _fuzzy_report(results, facts)
    if "winnow_exact" in results or "raydata_exact" in results:
        all_ok &= _exact_report(results, facts)
    print(
        "\nNotes: wall s is the whole subprocess (interpreter start, imports, Ray start/stop); "
        "docs/s and MB/s use it (MB = 10^6 bytes of text). engine s: Winnow's job wall_s, "
        "datatrove's four executors, Ray Data's ray.init..shutdown. driver MiB: the launched "
        "process; tree MiB: it and all its descendants summed (peak of the sums)."
    )
    for key, r in results.items():
        if isinstance(r, dict) and "ok" in r and not r["ok"]:
            print(f"\n--- {key} failed (rc={r.get('rc')}) ---\n{r.get('error', '')}")
    return all_ok


def _fuzzy_report(results: dict[str, Any], facts: dict[str, Any]) -> bool:
    all_ok = True
    print("\nFuzzy dedup")
    header = (
        "engine", "wall s", "engine s", "docs/s", "MB/s", "removed", "precision", "recall",
        "none kept", ">1 kept", "driver MiB", "tree MiB",
    )  # fmt: skip
    rows = []
    labels = {
        "winnow_fuzzy": "Winnow fuzzy_dedup",
        "winnow_fuzzy_local": "Winnow, local exec.",
        "datatrove": "datatrove MinHash",
    }
    for key, label in labels.items():
        r = results.get(key)
        if r is None:
            continue
        s = r.get("score") or {}
        rows.append(
            (label, *_speed_cells(r, facts))
            + (
                (
                    f"{s['removed']:,}",
                    f"{s['precision']:.4f}",
                    f"{s['recall']:.4f}",
                    str(s["none_kept"]),
                    str(s["over_kept"]),
                )
                if s
                else ("-",) * 5
            )
            + (_mib(r.get("driver_rss")), _mib(r.get("tree_rss")))
        )
        all_ok &= bool(r.get("ok"))
    _table(header, rows)
    d = results.get("datatrove")
    for key in ("winnow_fuzzy", "winnow_fuzzy_local"):
        w = results.get(key)
        if not (w and d and w.get("ok") and d.get("ok")):
            continue
        ratio = d["wall_s"] / w["wall_s"]
        recall_ok = w["score"]["recall"] >= d["score"]["recall"]
        met = ratio >= TARGET_RATIO and recall_ok
        print(
            f"{labels[key]} / datatrove docs/s (wall): {ratio:.2f}x; recall "
            f"{w['score']['recall']:.4f} vs {d['score']['recall']:.4f}; target >= "
            f"{TARGET_RATIO:.0f}x at equal or better recall: {'MET' if met else 'NOT MET'}"
        )
        if d.get("engine_s"):
            print(
                f"  (on datatrove's own clock, no interpreter start: {d['engine_s'] / w['wall_s']:.2f}x)"
            )
    w = results.get("winnow_fuzzy") or results.get("winnow_fuzzy_local")
    if d and d.get("ok"):
        stages = d["stages"]
        total = sum(stages.values())
        print(
            "datatrove steps: "
            + ", ".join(f"{n} {t:.1f}s ({t / total:.0%})" for n, t in stages.items())
            + f"; tokenizer: {d['tokenizer']}"
        )
    if w and w.get("ok"):
        print(f"Winnow stage busy seconds (job record, summed over actors): {w['stages']}")
        if w["removed_rows"] != w["score"]["removed"]:
            print(
                f"WARNING: Winnow's removed-rows artifacts hold {w['removed_rows']:,} rows but "
                f"{w['score']['removed']:,} input docs are missing from its output"
            )
            all_ok = False
        if "duplicate_of" in w:
            cluster = np.asarray(facts["cluster"])
            same = cluster[w["removed_ids"]] == cluster[w["duplicate_of"]]
            print(
                f"Winnow removed rows whose duplicate_of is in their own cluster: "
                f"{int(same.sum()):,} / {len(same):,}"
            )

    return all_ok


def _exact_report(results: dict[str, Any], facts: dict[str, Any]) -> bool:
    all_ok = True
    print("\nExact dedup")
    header = ("engine", "wall s", "engine s", "docs/s", "MB/s", "removed", "check",
              "driver MiB", "tree MiB")  # fmt: skip
    rows = []
    for key, label in (("winnow_exact", "Winnow exact_dedup"), ("raydata_exact", "Ray Data")):
        r = results.get(key)
        if r is None:
            continue
        s = r.get("score")
        check = "-"
        if s:
            want = facts["exact_removed"]
            ok = s["removed"] == want and s["duplicate_ids"] == 0 and s["precision"] == 1.0
            check = "ok" if ok else f"expected {want:,} removed"
            all_ok &= ok
        rows.append(
            (
                label,
                *_speed_cells(r, facts),
                "-" if not s else f"{s['removed']:,}",
                check,
                _mib(r.get("driver_rss")),
                _mib(r.get("tree_rss")),
            )
        )
        all_ok &= bool(r.get("ok"))
    _table(header, rows)
    w, ray_ = results.get("winnow_exact"), results.get("raydata_exact")
    if w and ray_ and w.get("ok") and ray_.get("ok"):
        same = w["score"]["removed"] == ray_["score"]["removed"]
        print(
            f"Winnow / Ray Data docs/s (wall): {ray_['wall_s'] / w['wall_s']:.2f}x; "
            f"same number removed: {'yes' if same else 'NO'}"
        )
    return all_ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Winnow vs datatrove (fuzzy) and Ray Data (exact) dedup, scored on ground truth."
    )
    p.add_argument("--docs", type=int, default=60_000, help="documents (default 60,000)")
    p.add_argument("--files", type=int, default=8, help="JSONL files (default 8)")
    p.add_argument(
        "--words",
        type=int,
        nargs=2,
        default=(50, 200),
        metavar=("MIN", "MAX"),
        help="words per original (default 50 200: ~875 bytes a doc; 100 400 doubles the MB)",
    )
    p.add_argument("--workers", type=int, default=2, help="datatrove workers, Ray Data CPUs")
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated subset of {','.join(ENGINES)}",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="passed to `winnow run fuzzy_dedup --set` (e.g. lsh.threshold=0.8)",
    )
    p.add_argument("--data-root", type=Path, default=ROOT / ".bench", help="input cache folder")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the temporary run folder")
    p.add_argument("--keep-outputs", action="store_true", help="keep the temporary run folder")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per engine subprocess")
    p.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--worker", choices=("datatrove", "raydata_exact"), help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    if (
        args.docs < 10
        or args.files < 2
        or args.workers < 1
        or not 1 <= args.words[0] <= args.words[1]
    ):
        p.error(
            "--docs must be >= 10, --files >= 2 (datatrove shards files), --workers >= 1, "
            "--words 1 <= MIN <= MAX"
        )
    if args.files > args.docs:
        p.error("--files must not exceed --docs")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(args.engines) - set(ENGINES))
    if unknown or not args.engines:
        p.error(f"--engines: unknown {unknown}; choose from {','.join(ENGINES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        fn = {"datatrove": worker_datatrove, "raydata_exact": worker_raydata}[args.worker]
        print(RESULT_MARK + json.dumps(fn(args.input, args.work, args.workers)), flush=True)
        return 0
    input_dir, facts = ensure_corpus(args.data_root, args.docs, args.files, tuple(args.words))
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-dedup-", dir=args.workdir))
    results: dict[str, Any] = {"load_before": load(), "versions": versions(PACKAGES)}
    try:
        for path in sorted(input_dir.iterdir()):  # warm the page cache for every engine
            path.read_bytes()
        for engine in args.engines:
            if engine in ("winnow_fuzzy", "winnow_fuzzy_local"):
                executor = "local" if engine.endswith("_local") else "ray"
                r = run_winnow("fuzzy_dedup", work, input_dir, args.timeout, args.sets, executor)
            elif engine == "winnow_exact":
                r = run_winnow("exact_dedup", work, input_dir, args.timeout, [])
            else:
                r = run_worker(engine, work, input_dir, args.workers, args.timeout)
            if r.get("ok"):
                r["score"] = score(r["kept_ids"], facts)
            results[engine] = r
        results["load_after"] = load()
        ok = print_report(results, facts)
        if args.json_out:
            drop = {"kept_ids", "removed_ids", "duplicate_of"}
            payload = {
                "facts": {k: v for k, v in facts.items() if k != "cluster"},
                "results": {
                    k: (
                        {kk: vv for kk, vv in v.items() if kk not in drop}
                        if isinstance(v, dict)
                        else v
                    )
                    for k, v in results.items()
                },
            }
            args.json_out.write_text(json.dumps(payload, indent=1, default=str))
    finally:
        if args.keep_outputs:
            print(f"kept run folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
