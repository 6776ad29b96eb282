"""State's named files (the gateway's own, a migration's copy), on every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.storage.conftest import Backend, peer
from winnow.storage.fs import join
from winnow.storage.state import State


@pytest.fixture
def state(backend: Backend) -> State:
    return State(join(backend.url, "state"), backend.storage_options)


def test_files_are_written_listed_and_read_by_name(backend: Backend, state: State) -> None:
    assert state.files() == {} and state.read_files([]) == {}
    url = state.write_file("snapshots/a.json", b"{}")
    assert url == state.file_url("snapshots/a.json") and url.endswith("/state/snapshots/a.json")
    writer = State(state.url, peer(backend).storage_options)  # another process's instance
    writer.write_file("snapshots/b.json", b"[1]")
    writer.write_file("gateway/runtime.json", b"{}")
    assert state.files("snapshots") == {"snapshots/a.json": 2, "snapshots/b.json": 3}
    assert state.files() == {**state.files("snapshots"), "gateway/runtime.json": 2}
    assert state.read_file("snapshots/b.json") == b"[1]"
    assert state.read_files(["snapshots/a.json", "snapshots/b.json", "snapshots/gone.json"]) == {
        "snapshots/a.json": b"{}",
        "snapshots/b.json": b"[1]",
    }
    with pytest.raises(FileNotFoundError):
        state.read_file("snapshots/gone.json")


def test_mark_version_and_clear(state: State) -> None:
    url = state.mark_version("state/v2")
    assert state.version() == "state/v2" and url == state.file_url("VERSION")
    state.clear()
    assert state.files() == {} and state.version() is None


def test_place_tells_overlapping_roots_apart(backend: Backend, state: State) -> None:
    inner = State(join(state.url, "inner"), backend.storage_options)
    fs, root = state.place()
    assert inner.place() == (fs, root + "/inner")
    assert State(state.url + "/", backend.storage_options).place() == (fs, root)


def test_job_as_written_gives_the_record_and_when_it_was_written(state: State) -> None:
    assert state.job_as_written("j1") is None
    before = datetime.now(UTC) - timedelta(seconds=5)
    state.write_job({"job_id": "j1", "status": "RUNNING"})
    found = state.job_as_written("j1")
    assert found is not None
    record, written = found
    assert record == {"job_id": "j1", "status": "RUNNING"}
    assert written is not None and before <= written <= datetime.now(UTC) + timedelta(seconds=5)
    state.write_file("jobs/bad.json", b"{torn")
    with pytest.raises(ValueError):
        state.job_as_written("bad")
    assert json.loads(state.read_file("jobs/j1.json")) == record


def test_unchanged_inputs_are_not_written_again(tmp_path) -> None:
    """Every all-skipped rerun records the same inputs: the file is left as it is."""
    state = State(str(tmp_path / "state"))
    read = {"files": {"file:///a.parquet": {"size": 3}}, "batch_rows": 10, "reader": "r1"}
    state.write_inputs("p", read)
    path = tmp_path / "state" / "inputs" / "p.json"
    before = path.stat().st_ino
    state.write_inputs("p", dict(read))
    assert path.stat().st_ino == before  # a write replaces the file (temp + rename)
    state.write_inputs("p", {**read, "batch_rows": 20})
    assert path.stat().st_ino != before and state.read_inputs("p")["batch_rows"] == 20


def test_jobs_in_one_status_are_listed_newest_first(state: State) -> None:
    state.write_job({"job_id": "a", "status": "RUNNING", "created_at": "2026-01-01"})
    state.write_job({"job_id": "b", "status": "SUCCEEDED", "plan": [{"status": "RUNNING"}]})
    state.write_job({"job_id": "c", "status": "RUNNING", "created_at": "2026-01-02"})
    state.write_file("jobs/d.json", b'{"status": "RUNNING"')  # damaged: skipped
    assert [j["job_id"] for j in state.list_jobs("RUNNING")] == ["c", "a"]
    assert [j["job_id"] for j in state.list_jobs("SUCCEEDED")] == ["b"]
    assert state.list_jobs("FAILED") == [] and len(state.list_jobs()) == 3


def test_the_newest_matching_job_is_the_one_list_jobs_gives_first(state: State) -> None:
    def job(job_id: str, created: str | None, pipeline: str = "p") -> dict[str, object]:
        return {"job_id": job_id, "pipeline": pipeline, "created_at": created, "stages": [1]}

    state.write_job(job("a", "2026-01-01T00:00:03"))
    state.write_job(job("b", "2026-01-01T00:00:05", pipeline="q"))
    state.write_job(job("c", "2026-01-01T00:00:03"))  # a tie with a: list order decides
    state.write_job(job("e", None))  # no time: "None" sorts it first, as in list_jobs
    compact = json.dumps(job("d", "2026-01-01T00:00:04")).encode()  # another layout
    state.write_file("jobs/d.json", compact)
    state.write_file("jobs/f.json", b'{\n  "created_at": "2027-01-01",')  # damaged
    for pipeline in ("p", "q", "r"):
        for timed in (True, False):

            def match(j: dict[str, object], pipeline: str = pipeline, timed: bool = timed) -> bool:
                return j["pipeline"] == pipeline and (j["created_at"] is not None or not timed)

            expected = next((j for j in state.list_jobs() if match(j)), None)
            assert state.newest_job(match) == expected
    assert state.newest_job(lambda j: True)["job_id"] == "e"
    assert state.newest_job(lambda j: j["created_at"] is not None)["job_id"] == "b"
    assert state.newest_job(lambda j: j["job_id"] in "ad")["job_id"] == "d"
    tie = next(j for j in state.list_jobs() if j["job_id"] in "ac")
    assert state.newest_job(lambda j: j["job_id"] in "ac") == tie
