"""The event journal: torn tails, corrupt lines, recover, compaction, job archiving."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import fsspec
import pytest
from click.testing import CliRunner

from winnow.cli import maintenance as maintenance_cli
from winnow.errors import StateError, UsageError
from winnow.storage import journal
from winnow.storage.fs import is_local, join, to_url, write_atomic
from winnow.storage.state import State, event


@pytest.fixture
def local(tmp_path: Path) -> State:
    return State(str(tmp_path / "state"))


@pytest.fixture
def memory() -> Iterator[State]:
    """A state on an object-store-like filesystem: the journal is written as parts."""
    root = f"winnow-gw-{uuid.uuid4().hex}"
    yield State(f"memory://{root}")
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{root}"):
        fs.rm(f"/{root}", recursive=True)


@pytest.fixture(params=["file", "memory"])
def state(request: pytest.FixtureRequest) -> State:
    return request.getfixturevalue("local" if request.param == "file" else "memory")


def ev(kind: str, n: int) -> bytes:
    return json.dumps({"type": kind, "job_id": "j1", "n": n}).encode()


def day_ago(days: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days)).isoformat()


def write_day(state: State, day: str, data: bytes) -> str:
    """A journal day written as ``append_events`` would on this filesystem."""
    if is_local(state.fs):
        path = join(state.root, "events", f"{day}.jsonl")
    else:
        path = join(
            state.root, "events", day, f"0000000000001-host-1-000001-{uuid.uuid4().hex}.jsonl"
        )
    write_atomic(state.fs, path, data)
    return path


def today_file(state: State) -> str:
    return join(state.root, "events", f"{datetime.now(UTC):%Y-%m-%d}.jsonl")


def cli(*args: str) -> click.testing.Result:
    group = click.Group()
    maintenance_cli.register(group)
    return CliRunner().invoke(group, list(args), catch_exceptions=True)


# -- reading ------------------------------------------------------------------
def test_a_torn_last_line_is_tolerated_and_reported(state: State):
    path = write_day(
        state, day_ago(0), ev("a", 1) + b"\n" + ev("b", 2) + b"\n" + b'{"type": "c", "jo'
    )
    found = state.read_events()
    assert [e["type"] for e in found.events] == ["a", "b"]
    assert found.torn == [f"{to_url(state.fs, path)}:3"]


def test_a_corrupt_line_mid_file_is_an_error_naming_file_and_line(local: State):
    path = write_day(local, day_ago(0), ev("a", 1) + b"\nnot json at all\n" + ev("b", 2) + b"\n")
    with pytest.raises(StateError) as info:
        local.read_events()
    assert f"{path} line 2 is not JSON" in str(info.value)
    assert "winnow gateway start --recover" in str(info.value)
    assert info.value.exit_code == 2


def test_an_append_after_a_torn_tail_never_glues_onto_it(local: State):
    local.append_events([event("job_started", "j1")])
    with open(today_file(local), "ab") as fh:
        fh.write(b'{"type": "batch_done", "job_id": "j1", "ke')  # a crash mid-append
    local.append_events([event("job_finished", "j1")])
    lines = Path(today_file(local)).read_bytes().split(b"\n")
    assert lines[1] == b'{"type": "batch_done", "job_id": "j1", "ke'
    assert json.loads(lines[2])["type"] == "journal_torn_tail_sealed"  # the seal says why
    assert json.loads(lines[3])["type"] == "job_finished"
    assert lines[4] == b""
    # A sealed torn line stays a tolerated, reported torn tail; recover drops it.
    read = local.read_events()
    assert [e["type"] for e in read.events] == [
        "job_started",
        "journal_torn_tail_sealed",
        "job_finished",
    ]
    assert read.torn == [f"{today_file(local)}:2"]
    summary = journal.recover(local)
    assert summary["replayed"]["by_type"] == {
        "job_finished": 1,
        "job_started": 1,
        "journal_torn_tail_sealed": 1,
    }


# -- recover ------------------------------------------------------------------
def test_recover_drops_the_corrupt_lines_keeps_a_backup_and_replays(state: State):
    original = (
        ev("a", 1)
        + b"\n"
        + b"\xff\xfe not utf-8\n"
        + ev("b", 2)
        + b"\n[1, 2]\n"
        + ev("a", 3)
        + b"\n"
        + b'{"type": "torn'
    )
    path = write_day(state, day_ago(1), original)
    clean = write_day(state, day_ago(0), ev("c", 4) + b"\n")
    summary = journal.recover(state)

    assert summary["files"] == 2
    assert summary["lines_kept"] == 4 and summary["lines_dropped"] == 3
    [fixed] = summary["repaired"]
    assert fixed["dropped_lines"] == [2, 4, 6] and fixed["torn"] is True and fixed["kept"] == 3
    assert summary["replayed"] == {"total": 4, "by_type": {"a": 2, "b": 1, "c": 1}}
    assert state.fs.cat_file(path) == ev("a", 1) + b"\n" + ev("b", 2) + b"\n" + ev("a", 3) + b"\n"
    assert state.fs.cat_file(clean) == ev("c", 4) + b"\n"  # untouched
    [backup] = summary["backups"]
    assert "/events/corrupt/" in backup and backup.endswith(".bak")
    assert state.fs.cat_file(backup) == original
    after = state.read_events()
    assert len(after.events) == 4 and after.torn == []
    again = journal.recover(state)
    assert again["repaired"] == [] and again["replayed"]["total"] == 4


def test_recover_keeps_a_complete_last_record_that_lost_its_newline(local: State):
    path = write_day(local, day_ago(0), ev("a", 1) + b"\n" + ev("b", 2))
    summary = journal.recover(local)
    assert summary["lines_dropped"] == 0 and summary["replayed"]["total"] == 2
    assert Path(path).read_bytes().endswith(b"\n")


def test_recover_with_no_journal_is_a_no_op(local: State):
    assert journal.recover(local)["replayed"] == {"total": 0, "by_type": {}}


# -- compact ------------------------------------------------------------------
def test_compact_events_moves_older_days_into_one_gzip_archive(state: State):
    old = {day_ago(d): [ev(f"t{d}", i) for i in range(3)] for d in (5, 3, 2)}
    sources = [
        write_day(state, day, b"".join(x + b"\n" for x in lines)) for day, lines in old.items()
    ]
    recent = write_day(state, day_ago(0), ev("today", 0) + b"\n")

    result = journal.compact_events(state, keep_recent_days=1)

    assert result["days"] == [day_ago(5), day_ago(3), day_ago(2)]
    assert result["events"] == 9
    assert sorted(result["compacted"]) == sorted(to_url(state.fs, p) for p in sources)
    archive = result["archive"]
    assert archive.endswith(f"/events/archive/events-{day_ago(5)}_{day_ago(2)}.jsonl.gz")
    lines = gzip.decompress(state.fs.cat_file(archive)).decode().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["t5"] * 3 + ["t3"] * 3 + ["t2"] * 3
    assert [json.loads(x)["n"] for x in lines[:3]] == [0, 1, 2]
    for path in sources:
        assert not state.fs.exists(path)
    assert state.fs.exists(recent)
    assert [e["type"] for e in state.read_events().events] == ["today"]  # archives are cold
    assert journal.compact_events(state, keep_recent_days=1)["archive"] is None


def test_keep_recent_days_counts_today(local: State):
    for d in (0, 1, 2, 3):
        write_day(local, day_ago(d), ev(f"t{d}", d) + b"\n")
    result = journal.compact_events(local, keep_recent_days=2)
    assert result["days"] == [day_ago(3), day_ago(2)]
    assert result["kept_from"] == day_ago(1)
    assert sorted(e["type"] for e in local.read_events().events) == ["t0", "t1"]


def test_compaction_leaves_torn_tails_out_and_refuses_corrupt_sources(local: State):
    write_day(local, day_ago(4), ev("a", 1) + b"\n" + b'{"torn')
    result = journal.compact_events(local, keep_recent_days=1)
    assert result["events"] == 1 and result["torn"] == [f"{local.root}/events/{day_ago(4)}.jsonl:2"]

    bad = write_day(local, day_ago(3), ev("a", 1) + b"\nnot json\n" + ev("a", 2) + b"\n")
    with pytest.raises(StateError, match=rf"{bad} line 2 is not JSON; nothing was compacted"):
        journal.compact_events(local, keep_recent_days=1)
    assert Path(bad).exists()
    with pytest.raises(UsageError, match="keep at least 1 day"):
        journal.compact_events(local, keep_recent_days=0)


def test_compact_events_cli_prints_the_sources_and_the_archive(local: State):
    sources = [write_day(local, day_ago(d), ev("x", d) + b"\n") for d in (9, 8)]
    result = cli("compact-events", "--keep-recent-days", "1", "--state", local.url)
    assert result.exit_code == 0, result.output
    for path in sources:
        assert f"  {path}\n" in result.output
    assert (
        f"archive: {local.root}/events/archive/events-{day_ago(9)}_{day_ago(8)}.jsonl.gz"
        in result.output
    )
    assert "compacted 2 journal files" in result.output
    again = cli("compact-events", "--keep-recent-days", "1", "--state", local.url, "--json")
    assert json.loads(again.output)["compacted"] == []


# -- archive jobs ---------------------------------------------------------------
def test_archive_moves_only_old_finished_jobs(local: State):
    now = datetime.now(UTC)
    ages = {
        "old-ok": ("SUCCEEDED", 40),
        "old-failed": ("FAILED", 45),
        "old-cancelled": ("CANCELLED", 31),
        "old-pending": ("PENDING", 60),
        "old-running": ("RUNNING", 60),
        "new-ok": ("SUCCEEDED", 2),
    }
    for job_id, (status, days) in ages.items():
        created = (now - timedelta(days=days)).isoformat(timespec="milliseconds")
        local.write_job({"job_id": job_id, "status": status, "created_at": created})

    result = cli("archive", "--older-than", "30d", "--state", local.url)
    assert result.exit_code == 0, result.output
    assert "archived 3 finished job records" in result.output

    assert sorted(j["job_id"] for j in local.list_jobs()) == [
        "new-ok",
        "old-pending",
        "old-running",
    ]
    for job_id in ("old-ok", "old-failed", "old-cancelled"):
        created = now - timedelta(days=ages[job_id][1])
        moved = Path(local.root, "jobs-archive", f"{created:%Y-%m}", f"{job_id}.json")
        assert json.loads(moved.read_text())["status"] == ages[job_id][0]
        assert f"{job_id} {ages[job_id][0]} -> {moved}" in result.output
    data = json.loads(cli("archive", "--older-than", "12h", "--state", local.url, "--json").output)
    assert [j["job_id"] for j in data["archived"]] == ["new-ok"]


@pytest.mark.parametrize(
    ("text", "days"), [("30d", 30), ("12h", 0.5), ("90m", 90 / 1440), ("2w", 14), ("7", 7)]
)
def test_durations(text: str, days: float):
    assert journal.parse_duration(text) == pytest.approx(days)


def test_a_bad_duration_names_the_forms(local: State):
    result = cli("archive", "--older-than", "soon", "--state", local.url)
    assert isinstance(result.exception, UsageError)
    assert "30d, 12h" in str(result.exception)


def test_journal_size_counts_every_file_or_part_and_its_bytes(state: State):
    assert journal.journal_size(state) == (0, 0)
    state.append_events([event("a", "j1")])
    state.append_events([event("b", "j1")])
    files = state.event_files()
    assert journal.journal_size(state) == (
        len(files),
        sum(len(state.fs.cat_file(p)) for p in files),
    )
    assert len(files) == (1 if is_local(state.fs) else 2)  # one day file, or one part a flush
