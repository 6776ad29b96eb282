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
from winnow.storage.checkpoints import FAILED, RUNNING, SUCCEEDED, CheckpointStore
from winnow.storage.fs import join, resolve, write_atomic


def open_store(backend: Backend, job_id: str = "j1", flush_every: int = 256) -> CheckpointStore:
    fs, root = resolve(join(backend.url, "state"), backend.storage_options)
    return CheckpointStore(fs, root, job_id=job_id, flush_every=flush_every)


def other_process(backend: Backend, job_id: str = "j2", flush_every: int = 256) -> CheckpointStore:
    """A store on the same state through another filesystem instance (and cache)."""
    return open_store(peer(backend), job_id, flush_every)


def rec(key: str, status: str = SUCCEEDED, ts: float | None = None, **extra: Any) -> dict:
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
    store.append(rec("a", FAILED, ts=1.0))
    store.append(rec("b", SUCCEEDED, ts=1.0))  # flushes
    store.append(rec("a", SUCCEEDED, ts=2.0))
    store.flush()
    loaded = store.load("s")
    assert loaded.records["a"]["status"] == SUCCEEDED
    assert len(loaded.segments) == 2


def test_latest_record_wins_across_segments_and_jobs(backend: Backend):
    first = open_store(backend, job_id="j1", flush_every=1)
    first.append(rec("a", FAILED, ts=1.0, job="j1"))
    first.append(rec("b", SUCCEEDED, ts=1.0, job="j1"))
    first.append(rec("c", RUNNING, ts=1.0, job="j1"))
    second = other_process(backend, job_id="j2", flush_every=1)
    second.append(rec("a", SUCCEEDED, ts=2.0, job="j2"))
    second.append(rec("b", FAILED, ts=0.5, job="j2"))  # a newer segment, an older record
    second.append(rec("c", SUCCEEDED, ts=3.0, job="j2"))
    for reader in (first, second, open_store(backend, job_id="")):
        loaded = reader.load("s")
        assert len(loaded.segments) == 6
        assert {k: (r["status"], r["job"]) for k, r in loaded.records.items()} == {
            "a": (SUCCEEDED, "j2"),
            "b": (SUCCEEDED, "j1"),
            "c": (SUCCEEDED, "j2"),
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
    store.append(rec("a", FAILED, ts=1.0))
    whole = json.dumps(rec("c", ts=5.0)).encode()
    write_torn_segment(
        store, "9999999999999-crashed-000001.jsonl", rec("a", ts=2.0), rec("b"), tail=whole[:-7]
    )
    store.append(rec("d"))
    loaded = store.load("s")
    assert len(loaded.segments) == 3
    assert set(loaded.records) == {"a", "b", "d"}  # "c" was never completely written
    assert loaded.records["a"]["status"] == SUCCEEDED


def test_compaction_keeps_the_same_view(backend: Backend):
    store = open_store(backend, job_id="j1", flush_every=1)
    for i in range(10):
        store.append(rec(f"k{i}", FAILED, ts=1.0))
    other = other_process(backend, job_id="j2", flush_every=3)
    for i in range(0, 10, 2):
        other.append(rec(f"k{i}", SUCCEEDED, ts=2.0))
    other.flush()
    write_torn_segment(store, "0000000000001-crashed-000001.jsonl", rec("k1", ts=3.0), tail=b'{"st')
    before = store.load("s")
    assert len(before.segments) == 13
    assert not store.compact("s", min_segments=14)
    assert store.compact("s", min_segments=4)
    after = store.load("s")
    assert len(after.segments) == 1 and after.records == before.records
    assert other.load("s").records == before.records
    assert not store.compact("s", min_segments=4)  # one segment is already compact
    store.append(rec("k1", FAILED))  # a record written after compaction still wins
    assert store.load("s").records["k1"]["status"] == FAILED


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
    assert counting.calls == {"find": 1, "cat": 1}  # one listing, one batched read
    if "s3" in store.fs.protocol:
        assert requests == {"ListObjectsV2": 1, "GetObject": segments}
