from pathlib import Path

import pytest

from winnow.errors import ConfigError
from winnow.pipeline import load_pipeline
from winnow.profile import apply_overrides, check_set_stages, load_profile, unused_stage_tables


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
