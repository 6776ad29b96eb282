"""Contract suite for checkpoint segments: the same assertions on every backend.

Every test runs on ``memory://``, ``file://`` and ``s3://`` (a moto server on
loopback, s3fs with its default caches); see ``conftest.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.storage.conftest import Backend, CountingFS, count_s3_requests, peer
from winnow.errors import StateError
from winnow.records import BatchStatus
from winnow.storage import segment_lines
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.fs import join, resolve, to_url, write_atomic
from winnow.storage.state import State


def open_store(backend: Backend, job_id: str = "j1", flush_every: int = 256) -> CheckpointStore:
    fs, root = resolve(join(backend.url, "state"), backend.storage_options)
    return CheckpointStore(fs, root, job_id=job_id, flush_every=flush_every)


def other_process(backend: Backend, job_id: str = "j2", flush_every: int = 256) -> CheckpointStore:
    """A store on the same state through another filesystem instance (and cache)."""
    return open_store(peer(backend), job_id, flush_every)


def rec(
    key: str, status: str = BatchStatus.SUCCEEDED, ts: float | None = None, **extra: Any
) -> dict:
    return {"stage": "s", "key": key, "status": status, "ts": ts or time.time(), **extra}


def artifact(i: int) -> dict[str, Any]:
    digest = f"{i:064x}"
    return {
        "uri": f"s3://bucket/artifacts/sha256/{digest[:2]}/{digest}.parquet",
        "digest": digest,
        "bytes": 1000 + i,
        "records": 100,
        "schema_fp": "0123456789abcdef",
        "format": "parquet",
    }


def test_buffered_records_become_visible_only_after_flush(backend: Backend):
    store = open_store(backend, flush_every=1000)
    store.append(rec("a", artifact=artifact(1), attempt=1))
    assert store.load("s").records == {}
    assert store.flush() == 1
    loaded = store.load("s")
    assert loaded.records == {
        "a": rec("a", ts=loaded.records["a"]["ts"], artifact=artifact(1), attempt=1)
    }
    assert store.flush() == 0  # nothing buffered: no empty segment
    assert len(store.load("s").segments) == 1


def test_full_buffer_flushes_itself_and_latest_record_wins(backend: Backend):
    store = open_store(backend, flush_every=2)
    store.append(rec("a", BatchStatus.FAILED, ts=1.0))
    store.append(rec("b", BatchStatus.SUCCEEDED, ts=1.0))  # flushes
    store.append(rec("a", BatchStatus.SUCCEEDED, ts=2.0))
    store.flush()
    loaded = store.load("s")
    assert loaded.records["a"]["status"] == BatchStatus.SUCCEEDED
    assert len(loaded.segments) == 2


def test_latest_record_wins_across_segments_and_jobs(backend: Backend):
    first = open_store(backend, job_id="j1", flush_every=1)
    first.append(rec("a", BatchStatus.FAILED, ts=1.0, job="j1"))
    first.append(rec("b", BatchStatus.SUCCEEDED, ts=1.0, job="j1"))
    first.append(rec("c", BatchStatus.RUNNING, ts=1.0, job="j1"))
    second = other_process(backend, job_id="j2", flush_every=1)
    second.append(rec("a", BatchStatus.SUCCEEDED, ts=2.0, job="j2"))
    second.append(
        rec("b", BatchStatus.FAILED, ts=0.5, job="j2")
    )  # a newer segment, an older record
    second.append(rec("c", BatchStatus.SUCCEEDED, ts=3.0, job="j2"))
    for reader in (first, second, open_store(backend, job_id="")):
        loaded = reader.load("s")
        assert len(loaded.segments) == 6
        assert {k: (r["status"], r["job"]) for k, r in loaded.records.items()} == {
            "a": (BatchStatus.SUCCEEDED, "j2"),
            "b": (BatchStatus.SUCCEEDED, "j1"),
            "c": (BatchStatus.SUCCEEDED, "j2"),
        }


def test_fresh_flush_by_another_process_is_seen_by_the_next_load(backend: Backend):
    """The driver has listed (s3fs caches listings); another process adds to them."""
    driver = open_store(backend, job_id="")
    writer = other_process(backend, flush_every=1)
    assert driver.stages() == [] and driver.load("s").records == {}
    for i, stage in enumerate(["s", "t", "u"]):
        writer.append({**rec(f"k{i}"), "stage": stage})
        assert driver.stages() == ["s", "t", "u"][: i + 1]
    keys = {"k0"}
    for i in range(1, 4):
        writer.append(rec(f"k{i}"))
        keys.add(f"k{i}")
        loaded = driver.load("s")
        assert set(loaded.records) == keys and len(loaded.segments) == i + 1


def write_torn_segment(store: CheckpointStore, name: str, *records: dict, tail: bytes) -> None:
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    write_atomic(store.fs, join(store.stage_dir("s"), name), lines + tail)


def test_torn_segment_tail_is_tolerated(backend: Backend):
    store = open_store(backend, flush_every=1)
    store.append(rec("a", BatchStatus.FAILED, ts=1.0))
    whole = json.dumps(rec("c", ts=5.0)).encode()
    write_torn_segment(
        store, "9999999999999-crashed-000001.jsonl", rec("a", ts=2.0), rec("b"), tail=whole[:-7]
    )
    store.append(rec("d"))
    loaded = store.load("s")
    assert len(loaded.segments) == 3
    assert set(loaded.records) == {"a", "b", "d"}  # "c" was never completely written
    assert loaded.records["a"]["status"] == BatchStatus.SUCCEEDED


def test_compaction_keeps_the_same_view(backend: Backend):
    store = open_store(backend, job_id="j1", flush_every=1)
    for i in range(10):
        store.append(rec(f"k{i}", BatchStatus.FAILED, ts=1.0))
    other = other_process(backend, job_id="j2", flush_every=3)
    for i in range(0, 10, 2):
        other.append(rec(f"k{i}", BatchStatus.SUCCEEDED, ts=2.0))
    other.flush()
    write_torn_segment(store, "0000000000001-crashed-000001.jsonl", rec("k1", ts=3.0), tail=b'{"st')
    before = store.load("s")
    assert len(before.segments) == 13
    assert not store.compact("s", min_segments=14)
    assert store.compact("s", min_segments=4)
    after = store.load("s")
    assert len(after.segments) == 1 and after.records == before.records
    # Each key's newest line is copied as it was written (its spacing too).
    merged = store.fs.cat_file(after.segments[0]).decode().splitlines()
    lines = {json.loads(line)["key"]: line for line in merged}
    assert len(merged) == len(lines) == 10
    assert lines["k1"] == json.dumps(rec("k1", ts=3.0))
    assert other.load("s").records == before.records
    assert not store.compact("s", min_segments=4)  # one segment is already compact
    store.append(rec("k1", BatchStatus.FAILED))  # a record written after compaction still wins
    assert store.load("s").records["k1"]["status"] == BatchStatus.FAILED


@pytest.mark.parametrize("change", ["compacted", "rewritten"])
def test_compaction_stands_down_when_its_segments_change_between_its_two_reads(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, change: str
):
    store = open_store(backend, flush_every=2)
    for i in range(8):
        store.append(rec(f"k{i % 5}", ts=float(i + 1)))
    before = store.load("s")
    survey, changed = segment_lines.survey, []

    def then_changed(segments: Any) -> segment_lines.Merge | None:
        merge = survey(segments)  # the first read is done; the second is to come
        if changed:  # the other process's own compaction
            return merge
        changed.append(change)
        if change == "compacted":  # by another process, which then stands
            assert other_process(backend).compact("s", min_segments=2)
        else:  # same records, other bytes (its spacing)
            path = before.segments[1]
            write_atomic(store.fs, path, store.fs.cat_file(path).replace(b'"ts"', b' "ts"'))
        return merge

    monkeypatch.setattr(segment_lines, "survey", then_changed)
    assert not store.compact("s", min_segments=2)
    after = store.load("s")
    assert after.records == before.records and not after.damage
    expected = 1 if change == "compacted" else len(before.segments)
    assert len(after.segments) == expected  # nothing of ours was published or removed
    leftovers = [p for p in store.fs.find(join(backend.url, "state")) if ".tmp-" in p]
    assert leftovers == []


def test_compaction_keeps_the_newest_line_of_each_key_across_segments(backend: Backend):
    store = open_store(backend, flush_every=3)
    newest: dict[str, float] = {}
    for i in range(40):  # keys written again out of order: by timestamp, not by place
        key, ts = f"k{(i * 7) % 11}", float((i * 13) % 17 + 1)
        store.append(rec(key, ts=ts, n=i))
        if ts >= newest.get(key, -1.0):
            newest[key] = ts
    store.append(rec("k0", ts=newest["k0"], n="tie"))  # an equal ts: the later line wins
    store.flush()
    before = store.load("s")
    assert store.compact("s", min_segments=2)
    after = store.load("s")
    assert after.records == before.records
    assert {k: r["ts"] for k, r in after.records.items()} == newest
    assert after.records["k0"]["n"] == "tie"
    assert len(store.fs.cat_file(after.segments[0]).splitlines()) == len(newest)


@pytest.mark.parametrize(("batches", "flush_every"), [(1_000, 100), (10_000, 5_000)])
def test_load_of_a_stage_is_one_listing_not_one_read_per_batch(
    backend: Backend, batches: int, flush_every: int
):
    store = open_store(backend, flush_every=flush_every)
    for i in range(batches):
        store.append(rec(f"k{i}", artifact=artifact(i)))
    store.flush()
    counting = CountingFS(store.fs)
    reader = CheckpointStore(counting, store.root, job_id="")
    with count_s3_requests(counting.wrapped) as requests:
        loaded = reader.load("s")
    segments = batches // flush_every
    assert len(loaded.records) == batches and len(loaded.segments) == segments
    if "file" in store.fs.protocol:  # one listing; each segment read from disk a piece at a time
        assert counting.calls == {"find": 1}
    else:
        assert counting.calls == {"find": 1, "cat": 1}  # one listing, one batched read
    if "s3" in store.fs.protocol:
        assert requests == {"ListObjectsV2": 1, "GetObject": segments}


# -- damage: a bad line costs its batch, never the stage ----------------------
def damaged_segment(store: CheckpointStore) -> tuple[str, bytes]:
    """A segment with good records around five kinds of bad line, and a torn tail."""
    good = [rec("a", ts=1.0), rec("b", ts=1.0), rec("c", ts=1.0)]
    lines = [
        json.dumps(good[0]).encode(),
        b"\x00\x17garbage{not json",  # line 2
        json.dumps(good[1]).encode(),
        json.dumps(
            {"stage": "s", "status": BatchStatus.SUCCEEDED, "ts": 1.0}
        ).encode(),  # 4: no key
        b"[1, 2, 3]",  # 5: JSON, not a record
        json.dumps(rec("d", status="DONE")).encode(),  # 6: unknown status
        json.dumps(rec("e", ts=1.0) | {"ts": "yesterday"}).encode(),  # 7: ts not a number
        b"",
        json.dumps(good[2]).encode(),
    ]
    data = b"\n".join(lines) + b"\n" + json.dumps(rec("torn")).encode()[:-5]
    path = join(store.stage_dir("s"), "0000000000002-damaged-000001.jsonl")
    write_atomic(store.fs, path, data)
    return path, data


def test_a_damaged_line_is_skipped_and_reported_with_file_and_line(backend: Backend):
    store = open_store(backend, flush_every=1)
    store.append(rec("z", ts=1.0))
    path, _ = damaged_segment(store)
    loaded = store.load("s")
    assert set(loaded.records) == {"a", "b", "c", "z"}
    assert [(d.path, d.line) for d in loaded.damage] == [(path, n) for n in (2, 4, 5, 6, 7)]
    url = to_url(store.fs, path)
    text = [str(d) for d in loaded.damage]
    assert text[0].startswith(f"{url}:2: not JSON")
    assert text[1] == f"{url}:4: a checkpoint record without key"
    assert "list" in text[2] and "'DONE'" in text[3] and "'yesterday'" in text[4]
    assert other_process(backend).load("s").damage == loaded.damage
    # a torn tail alone is still tolerated quietly
    write_torn_segment(store, "0000000000003-crashed-000001.jsonl", rec("f"), tail=b'{"st')
    assert len(store.load("s").damage) == 5


def test_lines_that_join_into_valid_json_are_still_found_damaged(backend: Backend):
    # A segment is decoded whole when it can be: two halves of a record (the
    # first ends with "}" inside a list) and a line holding two records add up
    # to as many JSON values as lines, all records. Read line by line, all three
    # lines are damage; the whole decode must not stand in for that scan.
    store = open_store(backend, flush_every=1)
    first, second = rec("a", ts=1.0), rec("b", ts=1.0)
    split = json.dumps(first | {"list": [{"x": 1}, {"y": 2}]})
    cut = split.index('{"y"')
    lines = [
        split[: cut - 2].encode(),  # ends with the "}" of {"x": 1}
        split[cut:].encode(),  # starts with "{"
        (json.dumps(second) + "," + json.dumps(rec("c", ts=1.0))).encode(),
        json.dumps(rec("d", ts=1.0)).encode(),
    ]
    path = join(store.stage_dir("s"), "0000000000002-joined-000001.jsonl")
    write_atomic(store.fs, path, b"\n".join(lines) + b"\n")
    loaded = store.load("s")
    assert set(loaded.records) == {"d"}
    assert [d.line for d in loaded.damage] == [1, 2, 3]


def test_an_undamaged_segment_loads_the_same_whole_or_line_by_line(backend: Backend):
    store = open_store(backend, flush_every=1000)
    latest = {}
    for i in range(50):
        store.append(rec(f"k{i % 20}", ts=float(i + 1), job=f"j{i}"))
        latest[f"k{i % 20}"] = f"j{i}"
    store.flush()
    (path,) = store.load("s").segments
    whole = store.load("s").records
    # A blank line and a torn tail send the same bytes down the line-by-line scan.
    data = store.fs.cat_file(path)
    write_atomic(store.fs, path, data.replace(b"\n", b"\n\n", 1) + b'{"st')
    scanned = store.load("s")
    assert scanned.records == whole and not scanned.damage
    assert {k: r["job"] for k, r in whole.items()} == latest


def test_a_segment_read_in_pieces_reports_the_same_records_and_lines(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
):
    store = open_store(backend, flush_every=1)
    store.append(rec("z", ts=1.0))
    damaged_segment(store)
    whole = store.load("s")
    monkeypatch.setattr(segment_lines, "PIECE_BYTES", 16)  # about one line a piece
    pieces = store.load("s")
    assert pieces.records == whole.records and pieces.damage == whole.damage
    assert [d.line for d in pieces.damage] == [2, 4, 5, 6, 7]


def test_a_summary_load_keeps_only_the_summary_of_the_newest_record(backend: Backend):
    store = open_store(backend, flush_every=3)
    for i in range(7):  # k0 and k1 rewritten in later segments
        store.append(rec(f"k{i % 5}", ts=float(i + 1), job=f"j{i}", artifact=artifact(i)))
    store.append(rec("k2", BatchStatus.FAILED, ts=0.5, job="old"))  # older: loses
    store.flush()
    full = store.load("s").records
    slim = store.load("s", summary=True).records
    kept = ("key", "ts", "status", "artifact")  # the summary fields these records have
    assert slim == {k: {n: r[n] for n in kept} for k, r in full.items()}
    assert [slim[k]["artifact"]["digest"] for k in ("k0", "k1", "k2")] == [
        artifact(i)["digest"] for i in (5, 6, 2)
    ]


def test_a_line_longer_than_a_piece_is_read_whole(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
):
    store = open_store(backend, flush_every=10)
    for i in range(3):
        store.append(rec(f"k{i}", ts=float(i + 1), note="x" * (100 * i)))
    store.flush()
    whole = store.load("s").records
    monkeypatch.setattr(segment_lines, "PIECE_BYTES", 40)  # shorter than every line
    assert store.load("s").records == whole and len(whole) == 3


def test_compaction_leaves_a_damaged_stage_for_repair(backend: Backend):
    store = open_store(backend, flush_every=1)
    for i in range(4):
        store.append(rec(f"k{i}"))
    path, data = damaged_segment(store)
    assert not store.compact("s", min_segments=2)
    assert store.fs.cat_file(path) == data and len(store.load("s").segments) == 5


def test_repair_backs_up_then_rewrites_only_the_damaged_segment(backend: Backend):
    state = State(join(backend.url, "state"), backend.storage_options)
    store = state.checkpoints(job_id="j1", flush_every=1)
    store.append(rec("z", ts=1.0))
    path, data = damaged_segment(store)
    before = store.load("s")
    clean = {p: store.fs.cat_file(p) for p in before.segments if p != path}

    done = State(join(backend.url, "state"), peer(backend).storage_options).repair(before.damage)

    [entry] = done
    assert entry["file"] == to_url(state.fs, path) and entry["dropped_lines"] == 5
    relative = path[len(state.root) :].lstrip("/")
    assert entry["backup"].endswith(relative) and "/backups/repair-" in entry["backup"]
    fs, backup = resolve(entry["backup"], backend.storage_options)
    fs.invalidate_cache()
    assert fs.cat_file(backup) == data  # the damaged original, byte for byte
    after = open_store(backend).load("s")
    assert after.damage == [] and after.records == before.records
    kept = [line for line in data.split(b"\n")[:-1] if line.strip()]
    assert store.fs.cat_file(path) == b"".join(kept[i] + b"\n" for i in (0, 2, 7))
    assert {p: store.fs.cat_file(p) for p in clean} == clean  # the others are untouched
    assert state.repair(before.damage) == []  # nothing is damaged any more


def test_a_damaged_job_record_is_skipped_reported_and_set_aside(backend: Backend):
    state = State(join(backend.url, "state"), backend.storage_options)
    state.write_job({"job_id": "old", "created_at": "2026-01-01T00:00:00"})
    state.write_job({"job_id": "new", "created_at": "2026-01-02T00:00:00"})
    broken = state.job_path("broken")
    write_atomic(state.fs, broken, b'{"job_id": "broken", "status": "SUCC')
    write_atomic(state.fs, state.job_path("list"), b"[]")

    assert [j["job_id"] for j in state.list_jobs()] == ["new", "old"]
    listing = state.job_listing()
    assert [(d.path, d.line) for d in listing.damaged] == [(broken, 0), (state.job_path("list"), 0)]
    assert str(listing.damaged[0]).startswith(f"{to_url(state.fs, broken)}: not JSON")
    with pytest.raises(StateError, match="verify --repair"):
        state.read_job("broken")

    done = state.repair(listing.damaged)
    assert [d["action"] for d in done] == ["not a job record: moved to the backup"] * 2
    assert state.job_listing().damaged == [] and not state.fs.exists(broken)
    fs, backup = resolve(done[0]["backup"], backend.storage_options)
    assert fs.cat_file(backup) == b'{"job_id": "broken", "status": "SUCC'
    assert [j["job_id"] for j in state.list_jobs()] == ["new", "old"]
