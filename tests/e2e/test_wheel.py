"""Winnow as a library: the built wheel installed into a fresh virtualenv, run from elsewhere.

The wheel is built with ``uv build``, installed with ``uv pip install`` (its
dependencies pinned to ``uv.lock``'s versions, so the uv cache serves them)
into a virtualenv in a temporary directory, and ``winnow run
./my_pipeline.py --profile local-cpu`` runs from a project directory there:
the packaged profile is found without the repository, and a project's own
``profiles/local-cpu.toml`` overrides it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

UV = shutil.which("uv")
PACKAGED = ("gpu-single", "high-throughput", "local-cpu")

PIPELINE = '''\
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage


@dataclass
class Shout(Stage):
    """Uppercases ``text``."""

    name = "shout"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        index = batch.schema.get_field_index("text")
        return batch.set_column(index, "text", pc.utf8_upper(batch.column("text")))


pipeline = Pipeline("my-pipeline", [Shout()])
'''


def sh(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "WINNOW_STATE", "RAY_ADDRESS")
    }
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{args} exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, outside the repository, with the built wheel installed."""
    if UV is None:
        pytest.skip("uv is not installed (pip install uv)")
    tmp = tmp_path_factory.mktemp("wheel")
    sh(UV, "build", "--wheel", "--out-dir", tmp / "dist", ROOT, cwd=ROOT)
    [wheel] = (tmp / "dist").glob("winnow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "winnow/py.typed" in names
    assert "winnow/execution/boot/sitecustomize.py" in names  # run by the embedded Ray
    assert {f"winnow/profiles/{p}.toml" for p in PACKAGED} <= names
    pins = sh(UV, "export", "--frozen", "--no-hashes", "--no-emit-project", cwd=ROOT).stdout
    (tmp / "pins.txt").write_text(pins)
    sh(UV, "venv", "--python", sys.executable, tmp / "venv", cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    sh(UV, "pip", "install", "--python", python, wheel, "-c", tmp / "pins.txt", cwd=tmp)
    return tmp / "venv"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder with its own pipeline file and input, and no profiles/."""
    (tmp_path / "my_pipeline.py").write_text(PIPELINE)
    rows = [json.dumps({"id": i, "text": f"row {i}"}) for i in range(300)]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    return tmp_path


def winnow_run(venv: Path, project: Path, *extra: str) -> dict:
    proc = sh(
        venv / "bin" / "winnow",
        "run",
        "./my_pipeline.py",
        "--profile",
        "local-cpu",
        "--input",
        "rows.jsonl",
        "--json",
        *extra,
        cwd=project,
    )
    return dict(json.loads(proc.stdout))


def test_the_wheel_installs_and_runs_a_project_with_a_packaged_profile(venv: Path, project: Path):
    where = sh(venv / "bin" / "python", "-c", "import winnow; print(winnow.__file__)", cwd=project)
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the wheel, not the checkout
    summary = winnow_run(venv, project)  # the embedded Ray of a fresh install
    assert summary["status"] == "SUCCEEDED" and summary["rows_out"] == 300
    assert summary["batches"] == 1  # the packaged local-cpu: 5,000-row batches
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert Path(manifest["batches"][0]["artifact"]["uri"]).is_file()
    assert Path(summary["manifest"]).is_relative_to(project / ".winnow" / "output")
    record = json.loads(next((project / ".winnow" / "state").glob("v1/jobs/*.json")).read_text())
    assert record["profile"]["name"] == "local-cpu" and record["profile"]["batch_rows"] == 5000


def test_a_projects_profile_overrides_the_packaged_one(venv: Path, project: Path):
    (project / "profiles").mkdir()
    (project / "profiles" / "local-cpu.toml").write_text("batch_rows = 100\n")
    summary = winnow_run(venv, project, "--executor", "local")
    assert summary["status"] == "SUCCEEDED" and summary["rows_out"] == 300
    assert summary["batches"] == 3
    [record] = [
        json.loads(p.read_text()) for p in (project / ".winnow" / "state").glob("v1/jobs/*.json")
    ]
    assert record["profile"]["name"] == "local-cpu" and record["profile"]["batch_rows"] == 100
