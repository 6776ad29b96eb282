"""Scale benchmark: a run of 100,000 small batches, and a plan over 10,000 input files.

Not a pytest test; run it directly::

    uv run python tests/benchmarks/bench_scale.py
    uv run python tests/benchmarks/bench_scale.py --cases files --files 10000
    uv run python tests/benchmarks/bench_scale.py --cases run --batches 100000

Two cases, each printed next to its target (issue 27):

* ``run``: ``winnow run tests/pipelines/paced.py`` (two stages, pass-through
  and uppercase) over one JSONL file of ``--batches`` rows with
  ``batch_rows=1``, so ``--batches`` source batches and twice as many
  commits, on a fresh state, then again (every batch skipped). Each is its own
  ``python -m winnow.cli`` process; its peak RSS is the kernel's high-water
  mark for that process alone (``ru_maxrss`` read at exit: the driver, not
  Ray's workers). ``--executor local`` (default) runs the stages in the driver
  too, so its figure bounds the driver's; ``--executor ray`` measures the Ray
  driver. Target: at most 500 MiB.
* ``files``: ``winnow plan --json`` of the same pipeline over ``--files``
  small JSONL files (10 rows each, one batch per file), timed as a whole
  process: first on a fresh state (every file's row count read and cached in
  the state's source index), then again (the index answers), then once more
  after a run committed every batch (every decision a skip). Target: at most
  10 s. ``winnow plan`` over one file gives the fixed cost (interpreter
  start-up and imports) included in each.

Timings are medians of ``--repeat`` processes (the first-plan case runs once
per repeat on a fresh state).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(ROOT / "tests" / "pipelines" / "paced.py")
RSS_TARGET_MIB = 500
PLAN_TARGET_S = 10.0

# Runs the CLI, then prints this process's peak RSS (KiB on Linux) to stderr at exit.
CHILD = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('PEAK_RSS_KIB', "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "from winnow.cli.app import cli\n"
    "sys.argv = ['winnow', *sys.argv[1:]]\n"
    "cli()\n"
)


def winnow(args: list[str], timeout: float) -> tuple[float, int, str]:
    """Run ``winnow ARGS`` in a child process; return its seconds, peak RSS (bytes), stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WINNOW_STATE")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"winnow {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    peak = 0
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KIB "):
            peak = int(line.split()[1]) * 1024
    return seconds, peak, proc.stdout


def write_rows(path: Path, start: int, rows: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(start, start + rows)
        )
    )


def common(inputs: str, work: Path, batch_rows: int, extra: list[str] | None = None) -> list[str]:
    return [
        PIPELINE,
        "--profile",
        "local-cpu",
        "--input",
        inputs,
        "--output",
        str(work / "out"),
        "--state",
        str(work / "state"),
        "--set",
        f"batch_rows={batch_rows}",
        *(extra or []),
    ]


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def case_run(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    work = tmp / "run"
    work.mkdir()
    write_rows(work / "in.jsonl", 0, args.batches)
    rows = []
    for label in ("fresh", "rerun, all skipped"):
        seconds, peak, out = winnow(
            [
                "run",
                *common(str(work / "in.jsonl"), work, 1, ["--executor", args.executor, "--json"]),
            ],
            args.timeout,
        )
        counts = json.loads(out.strip().splitlines()[-1]).get("counts", {})
        ran = sum(c.get("run", 0) for c in counts.values())
        skipped = sum(c.get("skipped", 0) for c in counts.values())
        what = f"run {args.batches:,} batches ({label}, {args.executor}): driver peak RSS"
        done = f"{seconds:.0f} s, {ran:,} ran, {skipped:,} skipped"
        rows.append((what, f"{mib(peak)} ({done})", f"<= {RSS_TARGET_MIB} MiB"))
        print(rows[-1], flush=True)
    return rows


def case_files(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    inputs = tmp / "files"
    inputs.mkdir()
    for n in range(args.files):
        write_rows(inputs / f"part-{n:06d}.jsonl", n * 10, 10)
    one = tmp / "one.jsonl"
    write_rows(one, 0, 10)
    first, again, skipped, fixed = [], [], [], []
    for r in range(args.repeat):
        fixed.append(
            winnow(["plan", *common(str(one), tmp / "one", 10), "--json"], args.timeout)[0]
        )
        work = tmp / f"plan-{r}"
        plan = ["plan", *common(str(inputs), work, 10), "--json"]
        first.append(winnow(plan, args.timeout)[0])
        again.append(winnow(plan, args.timeout)[0])
    work = tmp / "plan-0"
    winnow(["run", *common(str(inputs), work, 10, ["--executor", "local"])], args.timeout)
    for _ in range(args.repeat):
        seconds, _, out = winnow(["plan", *common(str(inputs), work, 10), "--json"], args.timeout)
        skipped.append(seconds)
    stages = json.loads(out)["stages"]
    assert all(s["skip"] == args.files for s in stages), stages
    n = f"{args.files:,} files"
    target = f"<= {PLAN_TARGET_S:.0f} s"
    return [
        (
            "plan 1 file (the fixed cost: start-up, imports)",
            f"{statistics.median(fixed):.1f} s",
            "-",
        ),
        (f"plan {n} (fresh state)", f"{statistics.median(first):.1f} s", target),
        (f"plan {n} (source index cached)", f"{statistics.median(again):.1f} s", target),
        (f"plan {n} (all committed: skip)", f"{statistics.median(skipped):.1f} s", target),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=lambda s: s.split(","), default=["files", "run"])
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="winnow-bench-scale-") as name:
        tmp = Path(name)
        if "files" in args.cases:
            rows += case_files(args, tmp)
        if "run" in args.cases:
            rows += case_run(args, tmp)
    print()
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
