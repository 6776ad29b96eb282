from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

# Before any test imports Ray: its workers share this venv (not one `uv run` rebuilds
# without the extras), which importing winnow.execution sets up.
import winnow.execution  # noqa: F401

pytest_plugins = ["tests.s3_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
PACED = "tests/pipelines/paced.py"  # the test pipeline whose pace and failures --set controls
sys.path.insert(0, str(ROOT / "pipelines"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (once this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray shared by one test module (its runs attach, not start)."""
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING"
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three small demo files (plain, .gz, .plain) with a few malformed lines."""
    import demo

    directory = tmp_path_factory.mktemp("demo-inputs")
    return demo.sample_inputs(str(directory), files=3, rows_per_file=1500)


@pytest.fixture(scope="session")
def demo_job(tmp_path_factory: pytest.TempPathFactory, demo_inputs: list[str]) -> dict:
    """One finished ``winnow run demo`` (local-cpu, batch_rows=700), shared by the tests
    that read a real job's state and output: ``dir``, ``state`` (the --state option),
    ``where`` (--state and --output), ``inputs`` (the --input options) and ``record``
    (its summary). A test may add to it (an export, a file for gc to remove) but
    leaves its job and its artifacts as they were."""
    d = tmp_path_factory.mktemp("demo-job")
    state = ["--state", str(d / "state")]
    where = [*state, "--output", str(d / "out")]
    inputs = inputs_args(demo_inputs)
    record = run_json(
        "run", "demo", "--profile", "local-cpu", "--set", "batch_rows=700", *where, *inputs
    )
    assert record["status"] == "SUCCEEDED" and record["rows_out"] > 0
    return {"dir": d, "state": state, "where": where, "inputs": inputs, "record": record}


def inputs_args(inputs: Iterable[str | Path]) -> list[str]:
    """``--input`` once per input."""
    return [arg for i in inputs for arg in ("--input", str(i))]


def run_args(
    pipeline: str,
    where: Path,
    inputs: Iterable[str | Path],
    *sets: str,
    profile: str | None = None,
    state: str = "state",
    output: str = "out",
) -> list[str]:
    """``winnow run PIPELINE`` on ``inputs`` with a ``--set`` for each of ``sets``,
    its state in ``where/state`` and its output in ``where/out``."""
    return [
        "run",
        pipeline,
        *(["--profile", profile] if profile else []),
        *[arg for s in sets for arg in ("--set", s)],
        "--state",
        str(where / state),
        "--output",
        str(where / output),
        *inputs_args(inputs),
    ]


def run_cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "winnow.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_json(*args: str, expect: int = 0, **kwargs: object) -> dict:
    proc = run_cli(*args, "--json", **kwargs)  # type: ignore[arg-type]
    assert proc.returncode == expect, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return one_json(proc.stdout)


def one_json(stdout: str) -> dict:
    """What ``--json`` printed: exactly one JSON object and nothing else on stdout."""
    value = json.loads(stdout)
    assert isinstance(value, dict), f"--json printed {type(value).__name__}, not an object"
    return value
