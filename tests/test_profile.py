from pathlib import Path

import pytest

from winnow.errors import ConfigError
from winnow.pipeline import load_pipeline
from winnow.profile import (
    apply_overrides,
    check_set_stages,
    find_profile_file,
    load_profile,
    packaged_profiles,
    unused_stage_tables,
)


@pytest.mark.parametrize("name", ["local-cpu", "gpu-single", "high-throughput"])
def test_shipped_profiles_validate_against_demo(root: Path, name: str, monkeypatch):
    monkeypatch.chdir(root)
    profile = load_profile(name)
    specs = profile.apply(load_pipeline("demo"))
    names = [s.name for s in specs]
    assert names[0] == "normalize" and names[-1] == "embed"
    embed = specs[-1].resources
    if name == "local-cpu":
        assert "annotate" not in names and embed.num_gpus == 0
    if name == "gpu-single":
        assert "annotate" in names and embed.num_gpus == 1


def test_unknown_key_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_rows = 10\nbatchrows = 5\n[stages.embed]\nnum_gpu = 1\n")
    with pytest.raises(ConfigError) as info:
        load_profile(str(bad))
    text = str(info.value)
    assert "batchrows" in text and "stages.embed.num_gpu" in text and str(bad) in text


def test_wrong_type_is_named(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('batch_rows = "lots"\n')
    with pytest.raises(ConfigError, match="batch_rows"):
        load_profile(str(bad))


def test_set_overrides_profile_keys_and_stage_params(root: Path, monkeypatch):
    monkeypatch.chdir(root)
    profile = apply_overrides(
        load_profile("local-cpu"), ["batch_rows=123", "quality.min_words=3", "embed.num_cpus=0.25"]
    )
    assert profile.batch_rows == 123
    specs = {s.name: s for s in profile.apply(load_pipeline("demo"))}
    assert specs["quality"].stage.min_words == 3
    assert specs["embed"].resources.num_cpus == 0.25
    with pytest.raises(ConfigError, match=r"no stage 'nosuch'.*normalize"):
        check_set_stages(["nosuch.x=1"], load_pipeline("demo"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(load_profile("local-cpu"), ["batch_rows"])


def test_missing_profile_lists_available(root: Path, monkeypatch):
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError, match="local-cpu"):
        load_profile("nope")


def test_shared_profile_tables_for_other_pipelines_are_ignored_and_reported(
    root: Path, monkeypatch
):
    monkeypatch.chdir(root)
    paced = load_pipeline("tests/pipelines/paced.py")
    profile = load_profile("local-cpu")
    assert unused_stage_tables(profile, paced) == ["annotate", "embed", "normalize", "quality"]
    assert [s.name for s in profile.apply(paced)] == ["pace", "upper"]
    assert unused_stage_tables(profile, load_pipeline("demo")) == []


PACKAGED = ("gpu-single", "high-throughput", "local-cpu")


def test_packaged_profiles_are_found_from_any_directory(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no profiles/ here: the names come from the package
    folder = packaged_profiles()
    assert sorted(p.stem for p in folder.glob("*.toml")) == list(PACKAGED)
    for name in PACKAGED:
        assert find_profile_file(name) == folder / f"{name}.toml"
    profile = load_profile("local-cpu")
    assert profile.name == "local-cpu" and profile.batch_rows == 5000


def test_a_projects_profiles_folder_overrides_a_packaged_profile_by_name(
    tmp_path: Path, monkeypatch
):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "local-cpu.toml").write_text("batch_rows = 77\n")
    (tmp_path / "profiles" / "mine.toml").write_text("batch_rows = 78\n")
    monkeypatch.chdir(tmp_path)
    assert load_profile("local-cpu").batch_rows == 77
    assert load_profile("mine").batch_rows == 78
    assert load_profile("gpu-single").batch_rows == 20000  # not overridden: the packaged one
    # A path is a path, whatever the folders hold.
    packaged = packaged_profiles() / "local-cpu.toml"
    assert load_profile(str(packaged)).batch_rows == 5000
    with pytest.raises(ConfigError) as info:
        load_profile("nope")
    assert all(name in str(info.value) for name in (*PACKAGED, "mine"))


def test_the_profiles_have_one_copy_inside_the_package(root: Path):
    # A profiles/ folder at the repository root would override the packaged
    # profiles whenever Winnow runs from there, and drift from them.
    assert not (root / "profiles").exists(), "profiles live in src/winnow/profiles/ only"
    assert packaged_profiles() == root / "src" / "winnow" / "profiles"
