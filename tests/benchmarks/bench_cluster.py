"""The demo via `winnow submit` on the loopback cluster vs a local run of the same data.

Not a pytest test; run it directly::

    uv run python tests/benchmarks/bench_cluster.py
    uv run python tests/benchmarks/bench_cluster.py --files 4 --rows 20000

It generates the demo's sample data (``--files`` x ``--rows``), starts the
loopback cluster (``cluster/loopback.py``: a head with 1 CPU and two worker
nodes with 2 CPUs each, all on this machine, token auth on), and times:

* ``local``: ``winnow run demo`` on an embedded local Ray (the baseline);
* ``submit``: ``winnow submit demo --wait`` through the Jobs API, from the
  command starting to its exit (runtime-env upload, driver start, the run);
* ``attach``: ``winnow run demo --address <GCS>`` (a foreground driver on the
  cluster).

Every run uses the same profile and its own fresh state and output, and the
output digests must be equal, or the script fails. Wall time is the client
process's; rows/s is rows in / wall. The loopback cluster's nodes share this
machine's cores, so it cannot beat a local run here; the figures show what the
cluster path costs, not what a real cluster gains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "pipelines"))

PORT, DASHBOARD, CLIENT = 6580, 8286, 10022


def winnow(args: list[str], env: dict[str, str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "winnow", *args, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(
            f"winnow {' '.join(args[:2])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def digests(manifest: str) -> list[str]:
    data = json.loads(Path(manifest).read_text())
    return [b["artifact"]["digest"] for b in data["batches"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=30_000, help="rows per file")
    parser.add_argument("--profile", default="local-cpu")
    args = parser.parse_args()
    import demo

    tmp = Path(tempfile.mkdtemp(prefix="winnow-bench-cluster-"))
    inputs = demo.sample_inputs(str(tmp / "data"), files=args.files, rows_per_file=args.rows)
    input_args = [a for p in inputs for a in ("--input", p)]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    loop = [sys.executable, str(ROOT / "cluster" / "loopback.py")]
    where = ["--dir", str(tmp / "cluster"), "--port", str(PORT)]
    where += ["--dashboard-port", str(DASHBOARD), "--client-port", str(CLIENT)]
    subprocess.run([*loop, "up", *where], env=base_env, check=True, stdout=subprocess.DEVNULL)
    info = json.loads((tmp / "cluster" / "cluster.json").read_text())
    env = {**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": info["auth_token_path"]}
    rows = []
    try:
        for name, extra, run_env in (
            ("local (embedded Ray)", ["run"], base_env),
            (
                "submit --wait (Jobs API)",
                ["submit", "--wait", "--address", info["dashboard_url"]],
                env,
            ),
            ("run --address (attached)", ["run", "--address", info["gcs_address"]], env),
        ):
            out = tmp / name.split()[0]
            cmd = [extra[0], "demo", *extra[1:], "--profile", args.profile, *input_args]
            cmd += ["--state", str(out / "state"), "--output", str(out / "out")]
            record, wall = winnow(cmd, run_env)
            manifest = record.get("manifest") or record.get("manifest_uri")
            rows.append((name, wall, int(record["rows_in"]), digests(manifest)))
    finally:
        subprocess.run([*loop, "down", *where], check=False, stdout=subprocess.DEVNULL)
    base = rows[0]
    for name, _, _, d in rows[1:]:
        if d != base[3]:
            sys.exit(f"{name}: output differs from the local run's")
    print(
        f"\ndemo, {args.files} files x {args.rows:,} rows, profile {args.profile}, "
        f"{os.cpu_count()} cores; output digests identical across runs\n"
    )
    print(f"| {'run':<26} | {'wall s':>7} | {'rows/s':>9} | {'vs local':>8} |")
    print(f"| {'-' * 26} | {'-' * 7}: | {'-' * 9}: | {'-' * 8}: |")
    for name, wall, rows_in, _ in rows:
        print(f"| {name:<26} | {wall:7.2f} | {rows_in / wall:9,.0f} | {base[1] / wall:7.2f}x |")


if __name__ == "__main__":
    main()
