"""The public API (``winnow.__all__``): cheap to import, documented, typed for users' checkers."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import winnow
from tests.conftest import ROOT


def python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout


def test_import_winnow_stays_cheap():
    heavy = ("winnow.api", "winnow.result", "winnow.tools", "fsspec", "ray", "pandas", "rich")
    code = (
        f"import sys, json, winnow; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    assert json.loads(python(code)) == []


def test_every_public_name_resolves_and_is_documented():
    assert sorted(winnow.__all__) == winnow.__all__ and "run" in winnow.__all__
    for name in winnow.__all__:
        value = getattr(winnow, name)
        assert inspect.getdoc(value), f"winnow.{name} has no docstring"
    assert set(winnow.__all__) <= set(dir(winnow))


def test_winnow_plan_is_the_function_whatever_was_loaded_first():
    # Importing winnow.api imports the module winnow.plan, which Python binds as
    # the attribute winnow.plan; the public name is the function.
    for first in ("status", "run", "plan"):
        code = (
            f"import winnow; winnow.{first}; print(callable(winnow.plan), winnow.plan.__module__)"
        )
        assert python(code).split() == ["True", "winnow.session"]


def test_py_typed_ships_with_the_package():
    assert (Path(winnow.__file__).parent / "py.typed").is_file()


@pytest.mark.slow  # mypy follows ray, pyarrow and pandas: ~20 s on a cold cache
def test_a_users_code_is_type_checked_against_the_api(tmp_path: Path):
    user = tmp_path / "user.py"
    user.write_text(
        "import winnow\n\n\n"
        "def rows(path: str) -> int:\n"
        "    result = winnow.run(path, profile='local-cpu', executor='local')\n"
        "    status: str = result.status\n"
        "    return result.rows_out + len(status) + len(result.artifacts())\n\n\n"
        "winnow.run('x').rows_outt\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(user)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and '"RunResult" has no attribute "rows_outt"' in errors[0], proc.stdout
