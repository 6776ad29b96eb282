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
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": listening}))
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
