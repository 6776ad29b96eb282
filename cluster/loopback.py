"""A multi-node Ray cluster on this machine, on 127.0.0.1 only (tests and dev).

    uv run python cluster/loopback.py up [--workers 2] [--gpus N] [--no-auth]
    uv run python cluster/loopback.py status
    uv run python cluster/loopback.py down

`up` starts a head node and worker nodes with `ray start`; each node is its
own raylet with its own ports, and worker node k carries the custom resource
`winnow_node_k` so tests can pin or count placements. `--gpus N` gives the
last worker a fake GPU count: the scheduler honours `num_gpus` requests
against it, nothing touches a real GPU. Token authentication is on unless
`--no-auth`: the token is written to `<dir>/auth_token` (mode 0600) and every
node is started with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH pointing at
it. What was started is recorded in `<dir>/cluster.json`; `down` stops exactly
those processes (found by the cluster's own temp dir), nothing else of Ray's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
MARKER = "WINNOW_LOOPBACK_CLUSTER"


def ray_cli() -> list[str]:
    """`ray` as this script runs it: through `ray_start_on_loopback` below."""
    return [sys.executable, str(Path(__file__).resolve()), "_ray"]


def ray_start_on_loopback(argv: list[str]) -> None:
    """Ray's own CLI, except that 127.0.0.1 stays the node's address.

    `ray start --node-ip-address=127.0.0.1` swaps in the machine's routable IP,
    and a node whose address is not loopback binds its GCS, raylet, agent and
    Ray Client ports on every interface: anyone on the network could then run
    code on it. With the address kept, every port binds 127.0.0.1.
    """
    from ray._private import ray_constants, services

    services.resolve_ip_for_localhost = lambda host: host
    # The nodes' environment says "one machine" (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    # see `up`), so that every Ray process they start resolves 127.0.0.1 to
    # itself; only this launcher needs to be let past the guard that refuses a
    # worker node on a one-machine Ray.
    ray_constants.ENABLE_RAY_CLUSTER = True
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *argv]
    ray_main()


def node_ports(base: int, k: int) -> dict[str, int]:
    """Fixed ports for node k (0 = head), so nodes never collide."""
    p = base + 20 + 10 * k
    return {
        "node-manager-port": p,
        "object-manager-port": p + 1,
        "metrics-export-port": p + 2,
        "dashboard-agent-listen-port": p + 3,
        "dashboard-agent-grpc-port": p + 4,
        "runtime-env-agent-port": p + 5,
    }


def up(args: argparse.Namespace) -> dict:
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / "cluster.json").exists():
        sys.exit(f"a loopback cluster is already recorded in {root}/cluster.json: run `down` first")
    # Socket paths must stay short, so the temp dirs are not under `root`. Each
    # node has its own, as separate machines would: sharing one makes every
    # node's log monitor echo every worker's output. The name is this cluster's
    # own (port and dir), so `down` never matches another cluster's processes
    # and its logs never mix with an earlier cluster's.
    temp = f"/tmp/wnl-{args.port}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}/"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    # Every process of this cluster inherits the marker, so `down` finds them
    # all, even those that renamed themselves (ray::DashboardAgent) or whose
    # command line names no temp dir (the Ray Client server).
    env[MARKER] = str(root)
    # Ray resolves 127.0.0.1 to the machine's routable IP unless told it runs
    # on one machine; the processes the nodes start (Ray Client servers, job
    # drivers) must keep 127.0.0.1 to reach a GCS bound there.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    token_path = root / "auth_token"
    if args.no_auth:
        env["RAY_AUTH_MODE"] = "disabled"
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
    else:
        if not token_path.exists():
            token_path.write_text(secrets.token_hex(32))
        token_path.chmod(0o600)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
        env.pop("RAY_AUTH_TOKEN", None)
    # A dead node is declared dead after about 5 s instead of about 30 s.
    env.setdefault("RAY_health_check_period_ms", "1000")
    env.setdefault("RAY_health_check_failure_threshold", "5")
    # The head's Ray Client proxy starts a server process per ray:// driver and
    # gives it 30 s to answer; a busy 2-core machine can need longer.
    env.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "120")
    info = {
        "dir": str(root),
        "temp_dir": temp,
        "gcs_address": f"{HOST}:{args.port}",
        "dashboard_url": f"http://{HOST}:{args.dashboard_port}",
        "client_address": f"ray://{HOST}:{args.client_port}",
        "auth_token_path": None if args.no_auth else str(token_path),
        "nodes": [],
    }
    common = [
        f"--node-ip-address={HOST}",
        f"--object-store-memory={args.object_store_mb * 1024 * 1024}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
    ]
    head_ports = node_ports(args.port, 0)
    head = [
        *ray_cli(),
        "start",
        "--head",
        f"--port={args.port}",
        f"--num-cpus={args.head_cpus}",
        "--num-gpus=0",
        "--include-dashboard=true",
        f"--dashboard-host={HOST}",
        f"--dashboard-port={args.dashboard_port}",
        f"--ray-client-server-port={args.client_port}",
        '--resources={"winnow_head": 1}',
        *[f"--{k}={v}" for k, v in head_ports.items()],
        f"--temp-dir={temp}head",
        *common,
    ]
    _start(head, env, root / "head.log")
    info["nodes"].append({"name": "head", "resources": {"winnow_head": 1}, **head_ports})
    for k in range(1, args.workers + 1):
        ports = node_ports(args.port, k)
        resources = {f"winnow_node_{k}": 1}
        gpus = args.gpus if k == args.workers else 0
        cmd = [
            *ray_cli(),
            "start",
            f"--address={HOST}:{args.port}",
            f"--num-cpus={args.worker_cpus}",
            f"--num-gpus={gpus}",
            f"--resources={json.dumps(resources)}",
            *[f"--{k_}={v}" for k_, v in ports.items()],
            f"--temp-dir={temp}worker{k}",
            *common,
        ]
        _start(cmd, env, root / f"worker{k}.log")
        info["nodes"].append({"name": f"worker{k}", "resources": resources, "gpus": gpus, **ports})
    (root / "cluster.json").write_text(json.dumps(info, indent=2))
    _wait_ready(info, args.workers + 1, env)
    return info


def _start(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        rc = subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit(f"`{' '.join(cmd[:3])} ...` failed (exit {rc}); see {log}")


def _wait_ready(info: dict, nodes: int, env: dict[str, str], timeout: float = 90.0) -> None:
    """Wait until the dashboard answers and every node is alive."""
    deadline = time.monotonic() + timeout
    headers = {}
    if info["auth_token_path"]:
        headers["Authorization"] = "Bearer " + Path(info["auth_token_path"]).read_text().strip()
    last = ""
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                info["dashboard_url"] + "/nodes?view=summary", headers=headers
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = json.load(resp)
            summary = body.get("data", {}).get("summary", [])
            alive = [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]
            if len(alive) >= nodes:
                return
            last = f"{len(alive)}/{nodes} nodes alive"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(1.0)
    sys.exit(f"the loopback cluster did not come up within {timeout:.0f}s ({last})")


def _pids(info: dict) -> list[int]:
    """Every process started for this cluster: its command line names the
    cluster's temp dir, or its environment carries the cluster's marker."""
    marker = f"{MARKER}={info['dir']}".encode()
    found: set[int] = set()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if info["temp_dir"] in cmdline or marker in environ:
            found.add(pid)
    # And their descendants, whatever they did to their environment.
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def down(args: argparse.Namespace) -> None:
    root = Path(args.dir).resolve()
    path = root / "cluster.json"
    if not path.exists():
        print(f"no loopback cluster recorded in {root}")
        return
    info = json.loads(path.read_text())
    pids = _pids(info)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (pids := _pids(info)):
            time.sleep(0.2)
        if not pids:
            break
    path.unlink()
    print(f"loopback cluster stopped ({info['gcs_address']})")


def status(args: argparse.Namespace) -> None:
    path = Path(args.dir).resolve() / "cluster.json"
    if not path.exists():
        sys.exit(f"no loopback cluster recorded in {path.parent}: start one with `up`")
    info = json.loads(path.read_text())
    info["processes"] = len(_pids(info))
    print(json.dumps(info, indent=2))


def main() -> None:
    if sys.argv[1:2] == ["_ray"]:
        ray_start_on_loopback(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".winnow/loopback", help="where cluster.json is kept")
    parser.add_argument("--port", type=int, default=6380, help="GCS port of the head")
    parser.add_argument("--dashboard-port", type=int, default=8266)
    parser.add_argument("--client-port", type=int, default=10002, help="Ray Client (ray://)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--worker-cpus", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=0, help="fake GPU count on the last worker")
    parser.add_argument("--object-store-mb", type=int, default=400)
    parser.add_argument("--no-auth", action="store_true", help="turn token authentication off")
    args = parser.parse_args()
    if args.command == "up":
        info = up(args)
        print(f"loopback cluster up: {len(info['nodes'])} nodes")
        print(f"  submit:    --address {info['dashboard_url']}")
        print(f"  attach:    --address {info['gcs_address']}  (or {info['client_address']})")
        print(f"  dashboard: {info['dashboard_url']}")
        if info["auth_token_path"]:
            print(
                f"  token:     export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={info['auth_token_path']}"
            )
        print("  stop:      uv run python cluster/loopback.py down")
    elif args.command == "down":
        down(args)
    else:
        status(args)


if __name__ == "__main__":
    main()
