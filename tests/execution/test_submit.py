"""What `winnow submit` sends: the bundle of pipelines/ and profiles/ for the Jobs API."""

from __future__ import annotations

from pathlib import Path

from winnow.execution.submit import bundle
from winnow.profile import find_profile_file, packaged_profiles


def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "demo.py").write_text("# the project's demo\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "local-cpu.toml").write_text("batch_rows = 77\n")
    return tmp_path


def test_a_packaged_profile_is_bundled(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(project(tmp_path))
    chosen = find_profile_file("gpu-single")  # not in the project: the packaged one
    assert chosen.parent == packaged_profiles()
    with bundle("pipelines/demo.py", str(chosen)) as (root, pipe_ref, prof_ref):
        assert (pipe_ref, prof_ref) == ("pipelines/demo.py", "profiles/gpu-single.toml")
        assert (root / prof_ref).read_text() == chosen.read_text()
        assert (root / "profiles" / "local-cpu.toml").read_text() == "batch_rows = 77\n"


def test_the_project_profile_that_overrides_a_packaged_one_is_bundled(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(project(tmp_path))
    chosen = find_profile_file("local-cpu")
    assert chosen.resolve() == (tmp_path / "profiles" / "local-cpu.toml").resolve()
    with bundle("pipelines/demo.py", str(chosen)) as (root, _, prof_ref):
        assert (root / prof_ref).read_text() == "batch_rows = 77\n"


def test_named_files_win_over_project_files_of_the_same_name(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(project(tmp_path))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "local-cpu.toml").write_text("batch_rows = 99\n")
    (other / "demo.py").write_text("# another demo\n")
    with bundle(str(other / "demo.py"), str(other / "local-cpu.toml")) as (root, pipe, prof):
        assert (root / prof).read_text() == "batch_rows = 99\n"
        assert (root / pipe).read_text() == "# another demo\n"
