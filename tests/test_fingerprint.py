"""Code-aware stage fingerprints: what reruns a stage, and what does not."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

from winnow.errors import ConfigError
from winnow.fingerprint import code_digest, is_user_code

BASE = """
from dataclasses import dataclass
import pyarrow as pa
import pyarrow.compute as pc
from winnow import Stage

FACTOR = 2

def helper(col):
    return pc.utf8_upper(col)

@dataclass
class Upper(Stage):
    name = "upper"
    version = "1"
    min_len: int = 3

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.set_column(0, "text", helper(batch.column(0)))
"""


def load(tmp_path: Path, source: str, module: str = "fp_mod", extra: dict[str, str] | None = None):
    """Import ``source`` as a fresh module named ``module`` from its own file."""
    folder = tmp_path / module
    folder.mkdir(exist_ok=True)
    for name, text in (extra or {}).items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
        sys.modules.pop(name, None)
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(module, path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(folder))
    return mod


def fp(mod) -> str:
    return mod.Upper().fingerprint()


def test_editing_process_changes_the_fingerprint(tmp_path):
    before = fp(load(tmp_path, BASE, "a1"))
    after = fp(load(tmp_path, BASE.replace("utf8_upper", "utf8_lower"), "a2"))
    assert before != after


def test_a_helper_and_a_module_constant_it_uses_count(tmp_path):
    src = BASE.replace("return pc.utf8_upper(col)", "return pc.multiply(col, FACTOR)")
    base = fp(load(tmp_path, src, "b1"))
    assert fp(load(tmp_path, src.replace("FACTOR = 2", "FACTOR = 3"), "b2")) != base
    unrelated = src + "\nOTHER = 1\n\ndef unused():\n    return 1\n"
    assert fp(load(tmp_path, unrelated, "b3")) == base
    assert fp(load(tmp_path, unrelated.replace("OTHER = 1", "OTHER = 5"), "b4")) == base


def test_user_code_in_another_module_is_followed(tmp_path):
    src = BASE.replace("def helper(col):\n    return pc.utf8_upper(col)\n", "import helpers\n")
    src = src.replace("helper(batch", "helpers.shout(batch")
    lib = "import pyarrow.compute as pc\n\ndef shout(col):\n    return pc.utf8_upper(col)\n"
    base = fp(load(tmp_path, src, "c1", {"helpers": lib}))
    changed = lib.replace("utf8_upper", "utf8_lower")
    assert fp(load(tmp_path, src, "c2", {"helpers": changed})) != base


def test_comments_docstrings_layout_and_the_module_name_do_not_count(tmp_path):
    base = fp(load(tmp_path, BASE, "d1"))
    cosmetic = BASE.replace(
        "    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:\n",
        "    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:  # why\n"
        '        """Upper-case the text column."""\n\n',
    )
    assert fp(load(tmp_path, cosmetic, "d2")) == base
    assert fp(load(tmp_path, BASE, "renamed_pipeline_file")) == base


def test_parameters_version_neutral_params_and_pinning(tmp_path):
    mod = load(tmp_path, BASE, "e1")
    assert mod.Upper(min_len=4).fingerprint() != mod.Upper().fingerprint()
    neutral = load(
        tmp_path,
        BASE.replace('version = "1"', 'version = "1"\n    neutral_params = ("min_len",)'),
        "e2",
    )
    assert neutral.Upper(min_len=4).fingerprint() == neutral.Upper().fingerprint()
    pinned = BASE.replace('version = "1"', 'version = "1"\n    pin_to_version = True')
    a = fp(load(tmp_path, pinned, "e3"))
    assert fp(load(tmp_path, pinned.replace("utf8_upper", "utf8_lower"), "e4")) == a
    assert fp(load(tmp_path, pinned.replace('version = "1"', 'version = "2"'), "e5")) != a
    bad = load(
        tmp_path,
        BASE.replace('version = "1"', 'version = "1"\n    neutral_params = ("nope",)'),
        "e6",
    )
    with pytest.raises(ConfigError, match="nope"):
        bad.Upper().fingerprint()


def test_a_class_defined_in_a_function_and_its_closure(tmp_path):
    def make(threshold):
        from dataclasses import dataclass

        from winnow import Stage

        @dataclass
        class Local(Stage):
            name = "local"

            def process(self, batch):
                return batch.slice(0, threshold)

        return Local

    assert make(3)().fingerprint() != make(4)().fingerprint()
    assert make(3)().fingerprint() == make(3)().fingerprint()


def test_installed_packages_and_winnow_are_not_user_code(tmp_path):
    import pyarrow.compute as pc

    import winnow.stage

    assert not is_user_code(json)
    assert not is_user_code(pc)
    assert not is_user_code(winnow.stage.Stage)
    mod = load(tmp_path, BASE, "f1")
    assert is_user_code(mod.Upper)
    assert len(code_digest(mod.Upper)) == 64


def test_the_fingerprint_does_not_depend_on_the_process(tmp_path):
    """Same source, two interpreters: the same digest (no ids, no addresses)."""
    import subprocess

    folder = tmp_path / "proc"
    folder.mkdir()
    (folder / "pipe_x.py").write_text(textwrap.dedent(BASE))
    code = "import pipe_x; print(pipe_x.Upper().fingerprint())"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
