"""`winnow run --address` reaches a Ray head that `ray start --head` turned token
auth on for by itself (a token in ~/.ray/auth_token, RAY_AUTH_MODE unset).

Ray does that on every machine where an embedded Ray once ran (ray.init()
writes the token), yet a driver given an explicit address does not send the
token and is refused. Real `ray start`, real `winnow run`; HOME is a temporary
folder so the machine's own ~/.ray is not touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port, one_json

pytestmark = pytest.mark.slow
MARKER = "WINNOW_TEST_TOKEN_HEAD"


@pytest.fixture
def head_with_default_token(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    port = free_port()
    temp = f"/tmp/wnt-{port}"
    env.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONUNBUFFERED"], env[MARKER] = "1", temp  # every process of the head inherits it
    ray = [sys.executable, str(ROOT / "cluster" / "loopback.py"), "_ray"]
    start = subprocess.run(
        [*ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
         "--disable-usage-stats",
         # not Ray's fixed default (52365), which any other Ray on the machine holds
         f"--dashboard-agent-listen-port={free_port()}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "Token authentication is enabled" in start.stderr, start.stderr
        yield f"127.0.0.1:{port}", env
    finally:
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARKER) == temp:
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass


def test_run_attaches_to_a_local_head_that_turned_token_auth_on(
    tmp_path: Path, demo_inputs: list[str], head_with_default_token: tuple[str, dict[str, str]]
) -> None:
    address, env = head_with_default_token
    args = ["--profile", "local-cpu", "--input", demo_inputs[0], "--address", address]
    args += ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    # Exactly this environment: the test process's own may hold RAY_AUTH_MODE,
    # which any ray.init() in it sets.
    proc = subprocess.run(
        [sys.executable, "-m", "winnow.cli", "run", "demo", *args, "--json"],
        cwd=ROOT, env={k: v for k, v in env.items() if k != MARKER}, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = one_json(proc.stdout)
    assert summary["status"] == "SUCCEEDED" and summary["rows_in"] == 1500
    assert summary["rows_out"] > 0
