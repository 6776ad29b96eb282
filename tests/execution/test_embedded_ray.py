"""The embedded local Ray that `winnow run` starts keeps every port on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def probe(source: str, timeout: float = 180) -> dict[str, Any]:
    """Run ``source`` in a fresh interpreter (no RAY_ settings); the JSON its last line prints.

    Each probe runs in its own interpreter: connect() changes how Ray resolves
    addresses for the whole process, and the test must see a fresh Ray started by it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-c", source], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "autoscaler" not in proc.stderr.lower(), proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


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
    seen = probe(PROBE)
    assert seen["gcs"].startswith("127.0.0.1:"), seen["gcs"]
    names = {name for _, _, name in seen["listening"]}
    assert "gcs_server" in names and "raylet" in names, seen["listening"]
    exposed = [s for s in seen["listening"] if s[0] not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not exposed, exposed
    # Ray starts its dashboard process even with include_dashboard=False, for usage
    # stats only, and waits about 1.3 s for it; the embedded Ray goes without.
    assert seen["api_server"] == [], seen


SHUTDOWN_PROBE = """
from winnow.execution import cluster  # first, as in `winnow run`: before Ray reads its settings
import json, psutil, ray, time

def cmd(p):
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""

node_class, utils, services = ray._private.node.Node, ray._private.utils, ray._private.services
def hooks():
    return [node_class.start_monitor, node_class.start_api_server, node_class.start_log_monitor,
            utils.get_dashboard_dependency_error, services.get_node,
            services._build_python_executable_command_memory_profileable]

before = hooks()
assert cluster.connect(None, num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())
node = ray._private.worker._global_node
def stand_in(c):  # the raylet's own command line names the stand-in too
    return c.split()[2:3] and c.split()[2].endswith("stand_in_agent.py")

for _ in range(100):  # the raylet starts its agents as it comes up: wait for both
    children = psutil.Process().children(recursive=True)
    commands = [cmd(p) for p in children]
    if sum(1 for c in commands if stand_in(c)) >= 2:
        break
    time.sleep(0.1)
after = hooks()
cluster.shutdown()
gone, alive = psutil.wait_procs(children, timeout=30)
print(json.dumps({
    "initialized": ray.is_initialized(),
    "monitor": "monitor" in node.all_processes,
    "monitor_children": [c for c in commands if "autoscaler/_private/monitor.py" in c],
    "log_monitor": [c for c in commands if "log_monitor.py" in c],
    "stand_ins": sorted(c.split()[3] for c in commands if stand_in(c)),
    "hooks_restored": before == after,
    "alive": [p.name() for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
}))
"""


def test_embedded_ray_starts_no_monitor_and_shutdown_leaves_no_process() -> None:
    """No autoscaler or log monitor, stand-in agents, Ray's hooks put back, nothing left."""
    seen = probe(SHUTDOWN_PROBE)
    assert seen["initialized"] is False
    assert seen["monitor"] is False and seen["monitor_children"] == [], seen
    assert seen["log_monitor"] == [], seen
    assert seen["stand_ins"] == ["dashboard", "runtime-env"], seen
    assert seen["hooks_restored"] is True, seen
    assert seen["alive"] == [], seen


RUNTIME_ENV_PROBE = """
from winnow.execution import cluster
import json, os, psutil, ray

assert cluster.connect(None, num_cpus=1)

@ray.remote
def variable():
    return os.environ.get("WINNOW_PROBE")

plain = ray.get(variable.remote())
asked = ray.get(variable.options(runtime_env={"env_vars": {"WINNOW_PROBE": "set"}}).remote(),
                timeout=120)
children = psutil.Process().children(recursive=True)
agents = [" ".join(p.cmdline()) for p in children
          if "runtime_env/agent/main.py" in " ".join(p.cmdline())]
cluster.shutdown()
gone, alive = psutil.wait_procs(children, timeout=30)
print(json.dumps({"plain": plain, "asked": asked, "agents": agents,
                  "alive": [p.name() for p in alive
                            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]}))
"""


def test_a_runtime_env_asked_of_the_embedded_ray_gets_rays_agent() -> None:
    """The stand-in becomes Ray's runtime-env agent when a task asks for one: same result."""
    seen = probe(RUNTIME_ENV_PROBE, timeout=300)
    assert seen["plain"] is None and seen["asked"] == "set", seen
    # Ray's own agent, exec'd in the stand-in's process on the stand-in's port.
    assert len(seen["agents"]) == 1 and "--runtime-env-agent-port=" in seen["agents"][0], seen
    assert seen["alive"] == [], seen


KILLED_RAYLET_PROBE = """
from winnow.execution import cluster
import json, os, signal, time, psutil, ray

assert cluster.connect(None, num_cpus=1)
for _ in range(100):  # the raylet starts its agents as it comes up: wait for both
    children = psutil.Process().children(recursive=True)
    stand_ins = [p for p in children
                 if p.cmdline()[2:3] and p.cmdline()[2].endswith("stand_in_agent.py")]
    if len(stand_ins) == 2:
        break
    time.sleep(0.1)
raylet = [p for p in children if p.name() == "raylet"][0]
os.kill(raylet.pid, signal.SIGKILL)
gone, alive = psutil.wait_procs(stand_ins, timeout=15)
print(json.dumps({"stand_ins": len(stand_ins), "alive": [p.pid for p in alive]}))
os._exit(0)  # the node is broken on purpose: no orderly shutdown
"""


def test_stand_in_agents_exit_when_their_raylet_is_killed() -> None:
    """Fate-sharing as Ray's own agents do: a killed raylet leaves no stand-in behind."""
    seen = probe(KILLED_RAYLET_PROBE)
    assert seen == {"stand_ins": 2, "alive": []}, seen
