"""execution/boot/sitecustomize.py: a slow import deferred, behaviour kept, in the
driver and in every process of the embedded Ray, without hiding the environment's
own sitecustomize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from winnow.execution import BOOT

# A stand-in for the real package: it leaves a mark when its body runs (the
# real one compiles a grammar there) and answers like it.
FAKE = """
import os
open(os.environ["MARK"], "a").write("imported\\n")

def is_valid_syntax(kind, value):
    return " " not in value
"""

CHECK = """
import json, sys, os
import jsonschema
v = jsonschema.Draft202012Validator(
    {"type": "string", "format": "iri"},
    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
)
before = os.path.exists(os.environ["MARK"])
bad = [e.message for e in v.iter_errors("http://exa mple.org/")]
good = [e.message for e in v.iter_errors("http://example.org/")]
print(json.dumps({"before": before, "bad": bad, "good": good,
                  "site": getattr(sys.modules.get("sitecustomize"), "MARKER", None)}))
"""


def _python(tmp_path: Path, code: str, *path: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "MARK": str(tmp_path / "mark")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture
def fake(tmp_path: Path) -> str:
    pkg = tmp_path / "fake"
    pkg.mkdir()
    (pkg / "rfc3987_syntax.py").write_text(FAKE)
    return str(pkg)


def test_the_import_waits_for_first_use_and_then_answers_the_same(tmp_path: Path, fake: str):
    plain = _python(tmp_path, CHECK, fake)
    assert plain["before"] is True  # jsonschema imports it at once, without the boot file
    (tmp_path / "mark").unlink()
    booted = _python(tmp_path, CHECK, BOOT, fake)
    assert booted["before"] is False  # not imported by `import jsonschema` ...
    assert booted["bad"] == plain["bad"] != []  # ... and validation is unchanged
    assert booted["good"] == plain["good"] == []
    assert (tmp_path / "mark").read_text() == "imported\n"


def test_the_environments_own_sitecustomize_still_runs(tmp_path: Path, fake: str):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("MARKER = 'the environment'\n")
    seen = _python(tmp_path, CHECK, BOOT, str(own), fake)
    assert seen["site"] == "the environment" and seen["before"] is False


@pytest.mark.slow
def test_every_process_of_the_embedded_ray_starts_with_it(tmp_path: Path, fake: str):
    code = """
import json, os, sys
sys.path.insert(0, os.environ["FAKE"])
from winnow.execution import embedded  # before Ray, as winnow's own imports go
import ray

embedded.start(1, {})

@ray.remote
def probe():
    import sys
    return type(sys.modules.get("rfc3987_syntax")).__name__, sys.modules["sitecustomize"].__file__

kind, site = ray.get(probe.remote())
ray.shutdown()
print(json.dumps({"driver": type(sys.modules.get("rfc3987_syntax")).__name__,
                  "worker": kind, "site": site, "path": os.environ.get("PYTHONPATH")}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update({"FAKE": fake, "MARK": str(tmp_path / "mark"), "PYTHONPATH": fake})
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["driver"] == "_Deferred"  # winnow.execution installed it before `import ray`
    assert seen["worker"] == "_Deferred"
    assert seen["site"] == str(Path(BOOT) / "sitecustomize.py")
    assert seen["path"] == fake  # the driver's environment is given back after ray.init
    assert not (tmp_path / "mark").exists()  # no process of the node imported it
