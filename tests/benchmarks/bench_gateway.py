"""Gateway load test: N small jobs enqueued at once by C concurrent clients.

    uv run python tests/benchmarks/bench_gateway.py            # 200 jobs, 4 clients
    uv run python tests/benchmarks/bench_gateway.py --jobs 40

Each client is its own process calling ``winnow enqueue``'s library function
in a loop, each job on its own small input file (same pipeline and profile,
so the gateway reuses its warm actors from job to job). The gateway runs in the background on a fresh state. Prints a
table: jobs, clients, enqueue time, time to drain the queue, jobs/min, the
daemon's peak RSS (VmHWM), and whether every job ran exactly once (one
``job_started`` event per job, every job SUCCEEDED).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import json, sys
from pathlib import Path
from winnow.gateway import queue
from winnow.request import RunRequest
state, folder, n, client, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
for k in range(n):
    path = Path(folder) / f"input-{client}-{k:04d}.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"{client} {k} row {i}"}) + "\\n"
                            for i in range(rows)))
    queue.enqueue(RunRequest("tests/pipelines/paced.py", None, [str(path)],
                             state.replace("state", "out"), state, ["batch_rows=100"]))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rows", type=int, default=200, help="rows per job's input file")
    p.add_argument("--port", type=int, default=18931)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="winnow-gw-bench-"))
    state, run_dir = str(tmp / "state"), str(tmp / "run")
    inp = tmp / "inputs"
    inp.mkdir()
    cli = [sys.executable, "-m", "winnow.cli"]
    subprocess.run(
        [
            *cli,
            "gateway",
            "start",
            "--state",
            state,
            "--run-dir",
            run_dir,
            "--port",
            str(args.port),
            "--poll",
            "0.2",
        ],
        cwd=ROOT,
        check=True,
    )
    pid = int((Path(run_dir) / "gateway.pid").read_text())
    per = args.jobs // args.clients
    t0 = time.monotonic()
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, state, str(inp), str(per), str(c), str(args.rows)],
            cwd=ROOT,
        )
        for c in range(args.clients)
    ]
    for c in clients:
        assert c.wait() == 0
    enqueued = time.monotonic() - t0
    total = per * args.clients
    status: dict = {}
    while True:
        out = subprocess.run(
            [*cli, "gateway", "status", "--json", "--state", state, "--run-dir", run_dir],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        status = json.loads(out.stdout)
        if status["queue"]["done"] + status["queue"]["failed"] >= total:
            break
        time.sleep(1)
    drained = time.monotonic() - t0
    hwm = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    subprocess.run([*cli, "gateway", "stop", "--run-dir", run_dir], cwd=ROOT, check=True)
    sys.path.insert(0, str(ROOT / "src"))
    from winnow import api

    st = api.open_state(state)
    jobs = [j for j in st.list_jobs()]
    started = Counter(e["job_id"] for e in st.read_events().events if e["type"] == "job_started")
    once = all(started[j["job_id"]] == 1 for j in jobs) and len(jobs) == total
    ok = sum(1 for j in jobs if j["status"] == "SUCCEEDED")
    print(
        f"{'jobs':>5} {'clients':>7} {'enqueue s':>9} {'drain s':>8} {'jobs/min':>9} "
        f"{'daemon peak RSS':>15} {'succeeded':>9} {'exactly once':>12}"
    )
    print(
        f"{total:>5} {args.clients:>7} {enqueued:>9.1f} {drained:>8.1f} "
        f"{total / drained * 60:>9.1f} {hwm:>11.0f} MiB {ok:>9} {once!s:>12}"
    )
    print(f"(state {state}; machine: 2 cores; jobs run one at a time on one embedded Ray)")


if __name__ == "__main__":
    main()
