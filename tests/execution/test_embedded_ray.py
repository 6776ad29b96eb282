"""The embedded local Ray that `winnow run` starts keeps every port on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Runs in its own interpreter: connect() changes how Ray resolves addresses
# for the whole process, and the test must see a fresh Ray started by it.
PROBE = """
import json, psutil, ray
from winnow.execution.cluster import connect

assert connect(None, num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
me = psutil.Process()
pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
listening = [
    [c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()]
    for c in psutil.net_connections(kind="inet")
    if c.status == psutil.CONN_LISTEN and c.pid in pids
]
api_server = [
    p.pid for p in me.children(recursive=True) if "dashboard/dashboard.py" in " ".join(p.cmdline())
]
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": listening,
                  "api_server": api_server}))
ray.shutdown()
"""


def test_every_port_of_the_embedded_ray_is_on_loopback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["gcs"].startswith("127.0.0.1:"), seen["gcs"]
    names = {name for _, _, name in seen["listening"]}
    assert "gcs_server" in names and "raylet" in names, seen["listening"]
    exposed = [s for s in seen["listening"] if s[0] not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not exposed, exposed
    # Ray starts its dashboard process even with include_dashboard=False, for usage
    # stats only, and waits about 1.3 s for it; the embedded Ray goes without.
    assert seen["api_server"] == [], seen


SHUTDOWN_PROBE = """
import json, psutil, ray
from winnow.execution.cluster import connect, shutdown

assert connect(None, num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())
node = ray._private.worker._global_node
monitor = node.all_processes["monitor"][0].process
terminated = []  # Ray's own shutdown SIGTERMs a live monitor and waits up to 1 s on it
monitor_terminate = monitor.terminate
monitor.terminate = lambda: (terminated.append(1), monitor_terminate())
children = psutil.Process().children(recursive=True)
shutdown()
gone, alive = psutil.wait_procs(children, timeout=30)
print(json.dumps({
    "initialized": ray.is_initialized(),
    "monitor_returncode": monitor.returncode,
    "monitor_terminated_by_ray": bool(terminated),
    "alive": [p.name() for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
}))
"""


def test_shutdown_stops_the_embedded_monitor_first_and_leaves_no_process() -> None:
    """The monitor is killed outright before Ray's shutdown reaches it; nothing is left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_PROBE], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["initialized"] is False
    assert seen["monitor_returncode"] == -9, seen
    assert seen["monitor_terminated_by_ray"] is False, seen
    assert seen["alive"] == [], seen
    assert "autoscaler" not in proc.stderr.lower(), proc.stderr[-3000:]
