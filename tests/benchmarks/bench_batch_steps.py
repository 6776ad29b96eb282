"""Where one batch's time goes in a stage actor, step by step (ms per batch).

Not a pytest test (run it directly)::

    uv run --group bench python tests/benchmarks/bench_batch_steps.py
    uv run --group bench python tests/benchmarks/bench_batch_steps.py --files 16 --reps 5

Each input file of ``bench_throughput.py``'s generated input (10,000 rows of
``id`` and ``text``, one row group) goes through the steps a stage actor
takes for one batch, in one process, timed one by one: read the row group,
``process`` (the throughput benchmark's transform), serialize (Parquet zstd,
``formats.serialize``), SHA-256, write to a temporary name in a file store,
read back, compare with the bytes written, check the footer (record count and
schema: what a commit checks), publish (rename). ``full decode`` is what
``verify --full`` adds (and what a commit did before it checked the footer);
it is timed beside the others, not counted in their sum. ``put`` is
``ArtifactStore.put`` on a fresh store, all commit steps in one call, to
check that the steps add up.

Both clocks are printed: wall ms, and CPU ms of the process (pyarrow's
threads included), which other work on a shared machine disturbs less than
wall time. Medians
over the files and ``--reps`` passes (the first pass warms caches and is not
counted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_throughput import ensure_input
from harness import ROOT, versions

from winnow.storage import formats
from winnow.storage.artifacts import ArtifactStore

STEPS = (
    "read",
    "process",
    "serialize",
    "sha256",
    "write",
    "read back",
    "compare",
    "footer check",
    "publish",
)
ASIDE = ("full decode", "put")


def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The throughput benchmark's stage: lowercase ``text``, append ``text_len``."""
    text = pc.utf8_lower(batch.column("text"))
    batch = batch.set_column(batch.schema.get_field_index("text"), "text", text)
    return batch.append_column("text_len", pc.cast(pc.utf8_length(text), pa.int32()))


class Clock:
    """Times named steps on both clocks, keeping every sample."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {s: [] for s in STEPS + ASIDE}
        self.cpu: dict[str, list[float]] = {s: [] for s in STEPS + ASIDE}
        self.keep = False

    def __call__(self, step: str, fn: Callable[[], Any]) -> Any:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        if self.keep:
            self.wall[step].append((time.perf_counter() - w) * 1000)
            self.cpu[step].append((time.process_time() - c) * 1000)
        return out


def one_batch(path: Path, store: ArtifactStore, fresh: ArtifactStore, clock: Clock) -> int:
    """Take one file through every step; return its artifact's size."""
    batch = clock("read", lambda: pq.ParquetFile(path).read_row_group(0).to_batches()[0])
    out = clock("process", lambda: transform(batch))
    data = clock("serialize", lambda: formats.serialize(out, "parquet"))
    digest = clock("sha256", lambda: hashlib.sha256(data).hexdigest())
    tmp = f"{store.root}/tmp-{digest}"
    clock("write", lambda: store.fs.pipe_file(tmp, data))
    back = clock("read back", lambda: store.fs.cat_file(tmp))
    assert clock("compare", lambda: back == data)
    found = clock("footer check", lambda: formats.check(back, "parquet", full=False))
    assert found.records == out.num_rows
    clock("publish", lambda: store.fs.mv(tmp, f"{store.root}/{digest}.parquet"))
    clock("full decode", lambda: formats.check(back, "parquet"))
    clock("put", lambda: fresh.put(out, "parquet"))
    return len(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=16, help="input files (batches) per pass")
    p.add_argument("--reps", type=int, default=3, help="counted passes over the files")
    p.add_argument("--data-root", type=Path, default=ROOT / ".bench")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args()
    folder, _ = ensure_input(args.data_root, args.files, 10_000)
    paths = sorted(folder.glob("*.parquet"))[: args.files]
    clock = Clock()
    sizes = []
    with tempfile.TemporaryDirectory(prefix="winnow-steps-") as work:
        load_before = os.getloadavg()
        for rep in range(args.reps + 1):
            clock.keep = rep > 0
            store = ArtifactStore(f"{work}/pass{rep}")
            fresh = ArtifactStore(f"{work}/put{rep}")
            store.fs.makedirs(store.root, exist_ok=True)
            sizes += [one_batch(path, store, fresh, clock) for path in paths]
        load_after = os.getloadavg()
    wall = {s: statistics.median(v) for s, v in clock.wall.items()}
    cpu = {s: statistics.median(v) for s, v in clock.cpu.items()}
    print(
        f"{len(paths)} batches x {args.reps} passes; artifact {statistics.median(sizes) / 1e6:.1f} MB"
    )
    print(
        f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after; {versions(('winnow', 'pyarrow'))}"
    )
    print(f"{'step':<14} {'wall ms':>8} {'cpu ms':>8}")
    for step in STEPS:
        print(f"{step:<14} {wall[step]:>8.1f} {cpu[step]:>8.1f}")
    print(f"{'sum':<14} {sum(wall[s] for s in STEPS):>8.1f} {sum(cpu[s] for s in STEPS):>8.1f}")
    commit = STEPS[2:]
    print(
        f"{'  of it commit':<14} {sum(wall[s] for s in commit):>8.1f} {sum(cpu[s] for s in commit):>8.1f}"
    )
    for step in ASIDE:
        print(f"{step + ' *':<14} {wall[step]:>8.1f} {cpu[step]:>8.1f}")
    print(
        "* aside, not in the sum: full decode = what verify --full adds; put = the commit in one call"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps({"wall_ms": wall, "cpu_ms": cpu, "load": load_after}))


if __name__ == "__main__":
    main()
