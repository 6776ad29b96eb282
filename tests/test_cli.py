"""Bad invocations: a clear one-paragraph error, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


def base(tmp_path: Path) -> list[str]:
    return ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]


def test_unknown_pipeline(tmp_path: Path):
    proc = run_cli("run", "nosuch", *base(tmp_path))
    assert proc.returncode == 2
    assert "no pipeline named 'nosuch'" in proc.stderr and "demo" in proc.stderr
    assert_nothing_written(tmp_path)


def test_bad_profile_key(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_rows = 10\nretries = 3\n")
    proc = run_cli("run", "demo", "--profile", str(bad), *base(tmp_path))
    assert proc.returncode == 2
    assert "unknown key 'retries'" in proc.stderr and str(bad) in proc.stderr.replace("\n", "")
    assert_nothing_written(tmp_path)


def test_missing_input(tmp_path: Path):
    proc = run_cli(
        "run",
        "demo",
        "--profile",
        "local-cpu",
        "--input",
        str(tmp_path / "missing.jsonl"),
        *base(tmp_path),
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert_nothing_written(tmp_path)


def test_protocol_without_its_extra_names_the_install(tmp_path: Path):
    proc = run_cli("plan", "demo", "--input", "gcs://bucket/data/*.jsonl", *base(tmp_path))
    assert proc.returncode == 2
    assert "pip install 'winnow[gcs]'" in proc.stderr.replace("\n", "")
    assert_nothing_written(tmp_path)


def test_bad_set_value(tmp_path: Path):
    proc = run_cli("plan", "demo", "--set", "quality.min_words=many", *base(tmp_path))
    assert proc.returncode == 2 and "quality.min_words" in proc.stderr
    proc = run_cli("plan", "demo", "--set", "quality.nope=1", *base(tmp_path))
    assert proc.returncode == 2 and "no parameter 'nope'" in proc.stderr
    assert_nothing_written(tmp_path)


def test_unknown_state_version_names_the_migration(tmp_path: Path, demo_inputs):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "VERSION").write_text("state/v9\n")
    proc = run_cli("run", "demo", "--input", demo_inputs[0], *base(tmp_path))
    assert proc.returncode == 2 and "migrate-state" in proc.stderr.replace("\n", " ")


@pytest.mark.parametrize("command", ["run", "plan", "verify", "jobs"])
def test_help_documents_every_command(command: str):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout
