"""State migration: an explicit copy to a new root marked state/v2; version checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import fsspec
import pytest
from click.testing import CliRunner

from winnow.cli import maintenance as maintenance_cli
from winnow.errors import StateError, UsageError
from winnow.gateway import migrate
from winnow.storage.state import KNOWN_VERSIONS, STATE_VERSION, State, event


def cli(*args: str) -> click.testing.Result:
    group = click.Group()
    maintenance_cli.register(group)
    return CliRunner().invoke(group, list(args))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A v1 state with files of every kind, a held lock and a stray temporary."""
    root = tmp_path / "state" / "v1"
    state = State(str(root))
    state.prepare()
    for i in range(3):
        state.write_job({"job_id": f"job-{i}", "status": "SUCCEEDED", "created_at": "2026-01-01"})
    cps = state.checkpoints(job_id="job-0")
    for stage in ("clean", "embed"):
        cps.append({"stage": stage, "key": "k1", "status": "FAILED"})
        cps.flush()
        cps.append({"stage": stage, "key": "k2", "status": "FAILED"})
        cps.flush()
    state.append_events([event("job_started", "job-0"), event("job_finished", "job-0")])
    state.write_source_index("abc", {"rows": 10})
    (root / "snapshots").mkdir()
    (root / "snapshots" / "state-latest.json").write_text('{"created_at": "2026-01-01"}')
    (root / "locks").mkdir()
    (root / "locks" / "demo.json").write_text('{"job_id": "job-9"}')
    (root / "jobs" / "job-0.json.tmp-deadbeef").write_text("half a write")
    (root / "notes.txt").write_text("operator notes")
    return root


def test_migrate_copies_everything_and_writes_version_and_summary(source: Path, tmp_path: Path):
    target = tmp_path / "state" / "v2"
    before = files(source)

    result = cli("migrate-state", "--source-root", str(source), "--target-root", str(target))

    assert result.exit_code == 0, result.output
    assert files(source) == before  # only read
    copied = files(target)
    for rel, data in before.items():
        if rel.startswith("locks/") or ".tmp-" in rel:
            assert rel not in copied
        elif rel != "VERSION":
            assert copied[rel] == data
    assert copied["VERSION"] == b"state/v2\n"
    summary = json.loads(copied["migration.json"])
    assert summary["source"] == str(source) and summary["target"] == str(target)
    assert summary["from_version"] == "state/v1" and summary["to_version"] == "state/v2"
    assert summary["copied"] == {
        "jobs": 3,
        "stages": 8,  # four segments and each one's index
        "events": 1,
        "snapshots": 1,
        "sources": 1,
        "inputs": 0,
        "other": 1,
    }
    assert summary["skipped"] == {"locks": 1, "temporary": 1}
    assert summary["started_at"] <= summary["finished_at"]
    out = result.output
    assert f"copied {source} (state/v1) -> {target}: jobs 3, stages 8, events 1" in out
    assert f"wrote {target}/VERSION (state/v2)" in out
    assert f"wrote {target}/migration.json" in out

    migrated = State(str(target))
    migrated.check_version()  # v2 opens
    assert len(migrated.list_jobs()) == 3
    assert migrated.checkpoints().load("embed").records.keys() == {"k1", "k2"}
    assert cli("snapshot", "--state", str(target)).exit_code == 0


def test_a_non_empty_target_needs_force(source: Path, tmp_path: Path):
    target = tmp_path / "v2"
    (target / "jobs").mkdir(parents=True)
    (target / "jobs" / "stale.json").write_text("{}")
    args = ("migrate-state", "--source-root", str(source), "--target-root", str(target))

    refused = cli(*args)
    assert isinstance(refused.exception, UsageError) and refused.exception.exit_code == 2
    assert "--force" in str(refused.exception) and "not empty" in str(refused.exception)
    assert files(target) == {"jobs/stale.json": b"{}"}

    forced = cli(*args, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output)["copied"]["jobs"] == 3
    assert not (target / "jobs" / "stale.json").exists()
    assert (target / "VERSION").read_text() == "state/v2\n"


def test_force_never_clears_a_folder_that_is_not_a_state(source: Path, tmp_path: Path):
    target = tmp_path / "project"
    target.mkdir()
    (target / "README.md").write_text("mine")
    with pytest.raises(UsageError, match="not Winnow state"):
        migrate.migrate_state(str(source), str(target), force=True)
    assert (target / "README.md").read_text() == "mine"


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_overlapping_roots_are_refused(source: Path, where: str):
    target = {"same": source, "inside": source / "v2", "around": source.parent}[where]
    before = files(source)
    with pytest.raises(UsageError, match=r"same root|inside"):
        migrate.migrate_state(str(source), str(target), force=True)
    assert files(source) == before


def test_an_empty_or_unknown_source_is_refused(tmp_path: Path):
    with pytest.raises(UsageError, match="holds no state"):
        migrate.migrate_state(str(tmp_path / "nothing"), str(tmp_path / "v2"))
    future = tmp_path / "future"
    future.mkdir()
    (future / "VERSION").write_text("state/v9\n")
    with pytest.raises(UsageError, match="state/v9"):
        migrate.migrate_state(str(future), str(tmp_path / "v2"))


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"winnow-gw-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{root}"):
        fs.rm(f"/{root}", recursive=True)


def test_migrate_between_filesystems(source: Path, memory_root: str):
    result = migrate.migrate_state(str(source), f"{memory_root}/v2")
    assert result["target"] == State(f"{memory_root}/v2").display()
    migrated = State(f"{memory_root}/v2")
    assert migrated.version() == "state/v2"
    assert sorted(j["job_id"] for j in migrated.list_jobs()) == ["job-0", "job-1", "job-2"]
    assert [e["type"] for e in migrated.read_events().events] == ["job_started", "job_finished"]


def test_versions_this_winnow_reads(tmp_path: Path):
    assert STATE_VERSION == "state/v1" and set(KNOWN_VERSIONS) == {"state/v1", "state/v2"}
    fresh = State(str(tmp_path / "fresh"))
    fresh.prepare()
    assert fresh.version() == "state/v1"  # a new state is still v1

    future = tmp_path / "future"
    future.mkdir()
    (future / "VERSION").write_text("state/v9\n")
    with pytest.raises(StateError) as info:
        State(str(future)).check_version()
    assert info.value.exit_code == 2
    assert "'state/v9'" in str(info.value)
    assert "winnow gateway migrate-state" in str(info.value)
    result = cli("snapshot", "--state", str(future))
    assert isinstance(result.exception, StateError) and result.exception.exit_code == 2
    assert not (future / "snapshots").exists()
