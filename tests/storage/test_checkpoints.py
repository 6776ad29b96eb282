from __future__ import annotations

import time
import uuid

import fsspec
import pytest

from winnow.storage.checkpoints import FAILED, SUCCEEDED, CheckpointStore


@pytest.fixture(params=["memory", "file"])
def store_args(request: pytest.FixtureRequest, tmp_path):
    if request.param == "memory":
        return fsspec.filesystem("memory"), f"/winnow-ckpt-{uuid.uuid4().hex}"
    return fsspec.filesystem("file"), str(tmp_path / "state")


def rec(key: str, status: str = SUCCEEDED, ts: float | None = None) -> dict:
    return {"stage": "s", "key": key, "status": status, "ts": ts or time.time()}


def test_buffered_records_become_visible_only_after_flush(store_args):
    store = CheckpointStore(*store_args, job_id="j1", flush_every=1000)
    store.append(rec("a"))
    assert store.load("s").records == {}
    store.flush()
    assert set(store.load("s").records) == {"a"}


def test_full_buffer_flushes_itself_and_latest_record_wins(store_args):
    store = CheckpointStore(*store_args, job_id="j1", flush_every=2)
    store.append(rec("a", FAILED, ts=1.0))
    store.append(rec("b", SUCCEEDED, ts=1.0))  # flushes
    store.append(rec("a", SUCCEEDED, ts=2.0))
    store.flush()
    loaded = store.load("s")
    assert loaded.records["a"]["status"] == SUCCEEDED
    assert len(loaded.segments) == 2


def test_compaction_merges_segments_without_losing_records(store_args):
    store = CheckpointStore(*store_args, job_id="j1", flush_every=1)
    for i in range(10):
        store.append(rec(f"k{i}"))
    assert len(store.load("s").segments) == 10
    assert store.compact("s", min_segments=4)
    loaded = store.load("s")
    assert len(loaded.segments) == 1 and set(loaded.records) == {f"k{i}" for i in range(10)}


def test_load_of_10k_records_is_one_listing(store_args):
    store = CheckpointStore(*store_args, job_id="j1", flush_every=5000)
    for i in range(10_000):
        store.append(rec(f"k{i}"))
    store.flush()
    loaded = store.load("s")
    assert len(loaded.records) == 10_000 and len(loaded.segments) == 2
