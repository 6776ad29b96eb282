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
from winnow.execution import cluster

def cmd(p):
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""

node_class, utils, services = ray._private.node.Node, ray._private.utils, ray._private.services
before = [node_class.start_monitor, node_class.start_api_server,
          utils.get_dashboard_dependency_error, services.get_node]
assert cluster.connect(None, num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())
node = ray._private.worker._global_node
children = psutil.Process().children(recursive=True)
after = [node_class.start_monitor, node_class.start_api_server,
         utils.get_dashboard_dependency_error, services.get_node]
cluster.shutdown()
gone, alive = psutil.wait_procs(children, timeout=30)
print(json.dumps({
    "initialized": ray.is_initialized(),
    "monitor": "monitor" in node.all_processes,
    "monitor_children": [p.pid for p in children if "autoscaler/_private/monitor.py" in cmd(p)],
    "hooks_restored": before == after,
    "alive": [p.name() for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
}))
"""


def test_embedded_ray_starts_no_monitor_and_shutdown_leaves_no_process() -> None:
    """One node for one run has nothing to autoscale: no monitor, Ray's hooks put back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_PROBE], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["initialized"] is False
    assert seen["monitor"] is False and seen["monitor_children"] == [], seen
    assert seen["hooks_restored"] is True, seen
    assert seen["alive"] == [], seen
    assert "autoscaler" not in proc.stderr.lower(), proc.stderr[-3000:]
