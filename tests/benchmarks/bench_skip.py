"""Skip-decision benchmark: what deciding "skip" costs for 10,000 committed batches.

Not a pytest test; run it directly::

    uv run python tests/benchmarks/bench_skip.py
    uv run python tests/benchmarks/bench_skip.py --backends file --batches 2000

For each backend and each pipeline depth (1 and 3 stages) the script commits
``--batches`` SUCCEEDED checkpoint records per stage through ``CheckpointStore``
(records shaped like the runner's, each with an artifact ref), then times the
skip decision the way ``plan.make_plan`` makes it: ``CheckpointStore.load`` of
every stage (``summary=True``: each record's ``records.SUMMARY_FIELDS``), one
``ArtifactStore.sizes()`` listing, and a chain key plus two dict lookups per
(batch, stage). Source discovery and the source index are not part of it.

Each state is timed at several segment counts per stage (``--segments``):

* 1000: a run that flushed every 10 batches (the runner flushes its buffer
  every 2 s as well as every ``checkpoint_flush_every`` records) and was
  killed before its end, where it compacts;
* 40: the same with ``checkpoint_flush_every = 256`` only;
* 1: after ``compact``, as a finished run leaves each stage: one merged
  segment and its columnar index (``storage/checkpoint_index.py``), which a
  planning load reads, verified, instead of decoding the segment's JSON.

Backends: ``file://`` in a temporary directory, and ``s3://`` on moto's S3 API
server on loopback (``ThreadedMotoServer``, as ``tests/storage/conftest.py``
starts it, but in a child process so the server does not share this process's
GIL and cores with the client being timed). Loopback moto is not S3: it has no
network latency but spends several ms of Python per request, so its seconds
say little about S3; the request counts carry over.

Artifacts: every ref points at a real object in the artifact store (a small
JSONL artifact at its content address), written directly rather than through
``ArtifactStore.put`` because only their listing is timed. ``file://`` gets one
artifact per (stage, batch). On S3, seeding is 5-10 ms per PUT on moto, so
``--s3-artifacts`` (default 10,000) caps them: refs share artifacts
round-robin, every decision is still "skip", and the table's ``artifacts``
column says how many objects the listing returned.

Columns: ``seconds`` is the median of ``--repeat`` timed decisions, each with
fresh filesystem instances (no listing cache from the setup; client creation
excluded); ``fs calls`` counts calls on the fsspec filesystem that reach
storage; ``requests`` counts HTTP requests sent to S3 (every listing page and
every GET of a multi-file ``cat``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.records import BatchStatus
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.fs import join, resolve, to_url

SUCCEEDED = BatchStatus.SUCCEEDED

KEY = "winnow-bench-key"
SECRET = "winnow-bench-secret"
REGION = "us-east-1"
IO_METHODS = frozenset(
    {"cat", "cat_file", "exists", "find", "info", "ls", "open", "pipe", "pipe_file", "rm", "size"}
)


class CountingFS:
    """An fsspec filesystem that counts the storage calls made through it."""

    def __init__(self, fs: Any) -> None:
        self.wrapped = fs
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if name not in IO_METHODS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@contextlib.contextmanager
def count_s3_requests(fs: Any) -> Iterator[Counter[str]]:
    """Count the HTTP requests s3fs sends, by operation; empty on other backends."""
    counts: Counter[str] = Counter()
    if "s3" not in fs.protocol:
        yield counts
        return
    fs.connect()

    def before_send(request: Any, **kwargs: Any) -> None:
        counts[kwargs["event_name"].rsplit(".", 1)[-1]] += 1

    fs.s3.meta.events.register("before-send.s3", before_send)
    try:
        yield counts
    finally:
        fs.s3.meta.events.unregister("before-send.s3", before_send)


# -- the S3 API server ---------------------------------------------------------


def _serve(address: Any, stop: Any) -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    address.put(server.get_host_and_port())
    stop.wait()
    server.stop()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Moto's S3 API on a free loopback port, in a child process; yield the endpoint."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    saved["AWS_DEFAULT_REGION"] = os.environ.get("AWS_DEFAULT_REGION")
    os.environ.update(
        AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION=REGION
    )
    ctx = multiprocessing.get_context("spawn")
    address, stop = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=_serve, args=(address, stop), daemon=True)
    process.start()
    try:
        host, port = address.get(timeout=60)
        yield f"http://{host}:{port}"
    finally:
        stop.set()
        process.join(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_bucket(endpoint: str) -> str:
    import boto3

    bucket = f"winnow-bench-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name=REGION,
    )
    client.create_bucket(Bucket=bucket)
    client.close()
    return bucket


# -- the state being timed -----------------------------------------------------


@dataclass
class Layout:
    """Where one benchmark state lives and what it holds."""

    backend: str
    state_url: str
    artifacts_url: str
    options: dict[str, Any]
    stages: list[str]
    batches: int
    segments: int
    artifacts: int


def chain_key(fingerprint: str, input_key: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{input_key}".encode()).hexdigest()


def source_key(j: int) -> str:
    return hashlib.sha256(f"source-batch-{j}".encode()).hexdigest()


def artifact_payload(i: int) -> bytes:
    return f'{{"artifact":{i}}}\n'.encode()


def seed_artifacts(url: str, options: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Write ``count`` small JSONL artifacts at their content addresses; return refs."""
    store = ArtifactStore(url, options)
    files: dict[str, bytes] = {}
    refs = []
    for i in range(count):
        data = artifact_payload(i)
        digest = hashlib.sha256(data).hexdigest()
        path = store.path_for(digest, "jsonl")
        files[path] = data
        refs.append(
            {
                "uri": to_url(store.fs, path),
                "digest": digest,
                "bytes": len(data),
                "records": 1,
                "schema_fp": "",
                "format": "jsonl",
            }
        )
    if "file" in store.fs.protocol:
        for path, data in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
    else:
        store.fs.pipe(files)
    return refs


def commit_checkpoints(layout: Layout, refs: list[dict[str, Any]]) -> None:
    """Append one SUCCEEDED record per (stage, batch) through CheckpointStore."""
    fs, root = resolve(layout.state_url, layout.options)
    flush_every = -(-layout.batches // layout.segments)
    store = CheckpointStore(fs, root, job_id="bench", flush_every=flush_every)
    now = time.time()
    for j in range(layout.batches):
        input_key = source_key(j)
        for i, stage in enumerate(layout.stages):
            key = chain_key(f"fp-{stage}", input_key)
            store.append(
                {
                    "stage": stage,
                    "key": key,
                    "input_key": input_key,
                    "batch": source_key(j),
                    "source": {"file": "s3://in/part-00000.parquet", "start": j, "stop": j + 1},
                    "attempt": 1,
                    "job_id": "bench",
                    "started_at": now,
                    "duration_s": 0.01,
                    "process_s": 0.008,
                    "commit_s": 0.002,
                    "node": "10.0.0.1",
                    "pid": 4242,
                    "rows_in": 1,
                    "rows_out": 1,
                    "status": SUCCEEDED,
                    "artifact": refs[(i * layout.batches + j) % len(refs)],
                    "ts": now,
                }
            )
            input_key = key
    store.flush()
    if layout.segments == 1:  # as a finished run leaves it: merged, with its index
        for stage in layout.stages:
            store.compact(stage, min_segments=1)


def decide_skips(layout: Layout) -> tuple[float, Counter[str], Counter[str], int]:
    """Time one skip decision from fresh filesystem instances.

    Returns seconds, fs calls, S3 requests, and how many (batch, stage) pairs
    were decided "skip".
    """
    fs, root = resolve(layout.state_url, layout.options)
    type(fs).clear_instance_cache()  # no listing cached by the setup
    fs, root = resolve(layout.state_url, layout.options)
    counting = CountingFS(fs)
    checkpoints = CheckpointStore(counting, root, job_id="")
    artifacts = ArtifactStore(layout.artifacts_url, layout.options)
    assert artifacts.fs is fs  # one instance per storage options, as in a run
    artifacts.fs = counting
    with count_s3_requests(fs) as requests:
        start = time.perf_counter()
        loaded = {name: checkpoints.load(name, summary=True).records for name in layout.stages}
        sizes = artifacts.sizes() if any(loaded.values()) else {}
        skips = 0
        for j in range(layout.batches):
            key = source_key(j)
            for name in layout.stages:
                key = chain_key(f"fp-{name}", key)
                rec = loaded[name].get(key)
                if rec is None or rec["status"] != SUCCEEDED:
                    continue
                art = rec["artifact"]
                if sizes.get(art["digest"]) == art["bytes"]:
                    skips += 1
        seconds = time.perf_counter() - start
    return seconds, counting.calls, requests, skips


# -- the table -----------------------------------------------------------------


@dataclass
class Row:
    backend: str
    stages: int
    batches: int
    segments: int
    artifacts: int
    seconds: float
    fs_calls: int
    requests: int
    request_kinds: str


def run_case(layout: Layout, repeat: int) -> Row:
    times: list[float] = []
    calls: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for _ in range(repeat):
        seconds, calls, requests, skips = decide_skips(layout)
        expected = layout.batches * len(layout.stages)
        if skips != expected:
            raise SystemExit(f"{layout.backend}: {skips} of {expected} decisions were skip")
        times.append(seconds)
    kinds = ", ".join(f"{n} {op}" for op, n in sorted(requests.items()))
    return Row(
        backend=layout.backend,
        stages=len(layout.stages),
        batches=layout.batches,
        segments=layout.segments,
        artifacts=layout.artifacts,
        seconds=statistics.median(times),
        fs_calls=sum(calls.values()),
        requests=sum(requests.values()),
        request_kinds=kinds or "-",
    )


def print_table(rows: list[Row]) -> None:
    head = (
        "backend",
        "stages",
        "batches",
        "segments/stage",
        "artifacts",
        "seconds",
        "fs calls",
        "S3 requests",
    )
    body = [
        (
            r.backend,
            str(r.stages),
            f"{r.batches:,}",
            f"{r.segments:,}",
            f"{r.artifacts:,}",
            f"{r.seconds:.3f}",
            str(r.fs_calls),
            f"{r.requests} ({r.request_kinds})" if r.requests else "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for b in body:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |")


def bench_backend(
    backend: str, root_url: str, options: dict[str, Any], args: argparse.Namespace
) -> list[Row]:
    rows = []
    seeded: dict[int, list[dict[str, Any]]] = {}  # artifact stores by object count
    for depth in args.stages:
        stages = [f"stage{i}" for i in range(depth)]
        wanted = depth * args.batches
        count = min(wanted, args.s3_artifacts) if backend == "s3" else wanted
        artifacts_url = join(root_url, f"artifacts-{count}")
        if count not in seeded:
            started = time.perf_counter()
            seeded[count] = seed_artifacts(artifacts_url, options, count)
            print(f"{backend}: {count:,} artifacts seeded in {time.perf_counter() - started:.1f}s")
        refs = seeded[count]
        for segments in args.segments:
            layout = Layout(
                backend=backend,
                state_url=join(root_url, f"d{depth}", f"state-{segments}"),
                artifacts_url=artifacts_url,
                options=options,
                stages=stages,
                batches=args.batches,
                segments=segments,
                artifacts=count,
            )
            started = time.perf_counter()
            commit_checkpoints(layout, refs)
            print(
                f"{backend}: {depth} stage(s) x {args.batches:,} checkpoints in "
                f"{segments:,} segment(s) committed in {time.perf_counter() - started:.1f}s",
                flush=True,
            )
            rows.append(run_case(layout, args.repeat))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--stages", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3])
    parser.add_argument(
        "--segments", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 40, 1]
    )
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["file", "s3"])
    parser.add_argument("--s3-artifacts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="winnow-bench-skip-") as tmp:
        if "file" in args.backends:
            rows += bench_backend("file", Path(tmp).as_uri(), {}, args)
        if "s3" in args.backends:
            with moto_server() as endpoint:
                options = {
                    "client_kwargs": {"endpoint_url": endpoint},
                    "key": KEY,
                    "secret": SECRET,
                }
                rows += bench_backend("s3", f"s3://{make_bucket(endpoint)}", options, args)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
