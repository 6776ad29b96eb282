"""storage/checkpoint_index.py: a segment's columnar index, used only when verified.

Every test runs on ``memory://``, ``file://`` and ``s3://`` (see ``conftest.py``):
a planning load (``summary=True``) reads a compacted segment from its index
only when the index's bytes match the digest in its name and it names the
segment's exact bytes; otherwise the JSON lines are decoded as before.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import subprocess
import sys
from typing import Any

import pyarrow as pa

from tests.storage.conftest import Backend, CountingFS, count_s3_requests
from tests.storage.test_checkpoints import artifact, open_store, rec
from winnow.records import BatchStatus, summary
from winnow.storage import checkpoint_index
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.fs import refresh, write_atomic


def varied(store: CheckpointStore) -> None:
    """Records of every shape a summary keeps, over several segments, some keys rewritten."""
    odd_ref = {**artifact(7), "extra": "kept"}  # fits no column: kept whole
    shapes: list[dict[str, Any]] = [
        rec("ok", ts=1.0, attempt=1, rows_in=3, rows_out=2, artifact=artifact(1), node="n1"),
        rec("first", ts=2.0, source_rows=5, bad_records=1, blank_lines=0, artifact=artifact(2)),
        rec("failed", BatchStatus.FAILED, ts=3.0, attempt=2, error={"type": "E", "message": "m"}),
        rec("int-ts", ts=4, rows_in=True, rows_out=None, artifact=odd_ref),
        rec("huge", ts=5.0, rows_in=2**70, artifact={**artifact(3), "bytes": 2**64}),
        rec("map", ts=6.0, shards={"0": artifact(4)}, quarantine={"count": 1, "artifact": None}),
        rec("bare", BatchStatus.RUNNING, ts=7.5),
        rec("ok", BatchStatus.INVALIDATED, ts=8.0, attempt=1, artifact=artifact(1)),
    ]
    for i in range(40):
        shapes.append(rec(f"k{i}", ts=10.0 + i, attempt=1, rows_in=1, artifact=artifact(i)))
    for r in shapes:
        store.append(r)
    store.flush()


def json_summaries(store: CheckpointStore, stage: str = "s") -> dict[str, dict[str, Any]]:
    """What a planning load must hold: the summary of each newest record, from the JSON."""
    return {k: summary(r) for k, r in store.load(stage).records.items()}


def index_files(store: CheckpointStore, stage: str = "s") -> list[str]:
    return store._listing(stage)[1]


def test_a_compacted_stage_plans_from_its_index_with_the_same_records(backend: Backend):
    store = open_store(backend, flush_every=7)
    varied(store)
    before_full, before = store.load("s"), store.load("s", summary=True)
    assert store.compact("s", min_segments=2)
    (index,) = index_files(store)
    assert store.fs.find(posixpath.dirname(index)) == [index]  # no temporary left
    (segment,) = store.load("s").segments
    assert checkpoint_index.indexed_segment(index) == (
        posixpath.basename(segment),
        hashlib.sha256(store.fs.cat_file(index)).hexdigest(),
    )
    assert store.load("s").records == before_full.records  # the full records: still the JSON
    after = store.load("s", summary=True)
    assert after.records == before.records == json_summaries(store) and not after.damage
    assert after.records["failed"]["error"] == {"type": "E", "message": "m"}
    assert after.records["int-ts"]["ts"] == 4 and type(after.records["int-ts"]["ts"]) is int
    assert after.records["ok"]["status"] == BatchStatus.INVALIDATED
    # Strings every record spells alike come from the index once, not once per record.
    k0, k1 = after.records["k0"], after.records["k1"]
    assert k0["artifact"]["schema_fp"] is k1["artifact"]["schema_fp"]
    assert k0["status"] is k1["status"] == BatchStatus.SUCCEEDED
    store.append(rec("ok", BatchStatus.FAILED, ts=99.0))  # a segment written later still wins
    store.flush()
    assert store.load("s", summary=True).records["ok"]["status"] == BatchStatus.FAILED


def test_every_flushed_segment_is_indexed_and_planned_from_its_index(backend: Backend):
    """A run killed before it compacts leaves segments a planning load reads from indexes."""
    store = open_store(backend, flush_every=7)
    varied(store)
    segments = store.load("s").segments
    assert len(segments) == 7
    indexed = [checkpoint_index.indexed_segment(p) for p in index_files(store)]
    assert sorted(name for name, _ in indexed) == sorted(posixpath.basename(p) for p in segments)
    for path in segments:  # each names its segment's exact bytes
        index = next(p for p in index_files(store) if posixpath.basename(path) in p)
        meta = pa.ipc.open_file(pa.BufferReader(store.fs.cat_file(index))).schema.metadata
        data = store.fs.cat_file(path)
        assert meta[b"winnow.segment_sha256"].decode() == hashlib.sha256(data).hexdigest()
        assert meta[b"winnow.segment_bytes"] == str(len(data)).encode()
    loaded = store.load("s", summary=True)
    assert loaded.records == json_summaries(store) and not loaded.damage
    # Proof the indexes are what is read: one forged index shows through...
    forge(store, segments[0], {"attempt": 9})
    forged = store.load("s", summary=True).records
    assert {r.get("attempt") for k, r in forged.items() if k in ("first", "failed")} == {9}
    # ...and a segment left without one (killed between the two writes) reads as JSON.
    store.fs.rm(index_files(store))
    refresh(store.fs, posixpath.dirname(posixpath.dirname(segments[0])))
    assert store.load("s", summary=True).records == json_summaries(store)


def forge(store: CheckpointStore, segment: str, change: dict[str, Any]) -> None:
    """Replace the segment's index with a valid one whose summaries differ by ``change``."""
    data = store.fs.cat_file(segment)
    lines = [json.dumps({**json.loads(line), **change}).encode() for line in data.splitlines()]
    sha = hashlib.sha256(data).hexdigest()
    index = checkpoint_index.build(lines, len(lines), posixpath.basename(segment), sha, len(data))
    store.fs.rm(index_files(store))
    write_atomic(
        store.fs, checkpoint_index.index_path(segment, checkpoint_index.digest(index)), index
    )
    refresh(store.fs, posixpath.dirname(posixpath.dirname(segment)))


def test_an_index_is_read_only_while_it_names_the_segments_exact_bytes(backend: Backend):
    store = open_store(backend, flush_every=7)
    varied(store)
    store.compact("s", min_segments=2)
    (segment,) = store.load("s").segments
    truth = store.load("s", summary=True).records
    # A valid index is what a planning load reads (this one says every batch ran twice)...
    forge(store, segment, {"attempt": 2})
    assert {r.get("attempt") for r in store.load("s", summary=True).records.values()} == {2}
    # ...until its segment's bytes change (a repair rewrote it): then the JSON lines.
    data = store.fs.cat_file(segment)
    write_atomic(store.fs, segment, data.replace(b'"attempt":1', b'"attempt":3', 1))
    loaded = store.load("s", summary=True).records
    assert loaded != truth and loaded == json_summaries(store)
    assert {r.get("attempt") for r in loaded.values()} == {None, 1, 2, 3}


def test_a_damaged_or_partial_index_falls_back_to_the_json_lines(backend: Backend):
    store = open_store(backend, flush_every=7)
    varied(store)
    store.compact("s", min_segments=2)
    truth = store.load("s", summary=True).records
    (index,) = index_files(store)
    data = store.fs.cat_file(index)
    for broken in (data[: len(data) // 2], data[:100] + bytes([data[100] ^ 1]) + data[101:]):
        write_atomic(store.fs, index, broken)  # its name's digest no longer matches
        assert store.load("s", summary=True).records == truth
    # Its bytes renamed to match their digest: a partial file that does not parse.
    store.fs.rm(index)
    renamed = checkpoint_index.index_path(
        store.load("s").segments[0], checkpoint_index.digest(data[: len(data) // 2])
    )
    write_atomic(store.fs, renamed, data[: len(data) // 2])
    assert store.load("s", summary=True).records == truth


def test_an_index_of_another_segment_is_not_used(backend: Backend):
    store = open_store(backend, flush_every=7)
    varied(store)
    store.compact("s", min_segments=2)
    (index,) = index_files(store)
    other = open_store(backend, job_id="j2", flush_every=100)
    for i in range(3):
        other.append(rec(f"n{i}", ts=200.0 + i))
    other.flush()
    store.compact("s", min_segments=2)  # merges both: the old index goes with its segment
    (new_index,) = index_files(store)
    assert new_index != index and len(store.load("s", summary=True).records) == 50
    # The merged segment's index copied under the name of a segment it does not describe.
    data = store.fs.cat_file(new_index)
    store.append(rec("late", ts=300.0))
    store.flush()
    late = store.load("s").segments[-1]
    store.fs.rm([p for p in index_files(store) if p != new_index])  # the late one's own
    write_atomic(store.fs, checkpoint_index.index_path(late, checkpoint_index.digest(data)), data)
    store.fs.rm(new_index)
    loaded = store.load("s", summary=True).records
    assert len(loaded) == 51 and loaded == json_summaries(store)


def test_a_planning_load_of_a_compacted_stage_is_one_listing_and_two_reads(backend: Backend):
    store = open_store(backend, flush_every=100)
    for i in range(1_000):
        store.append(rec(f"k{i}", artifact=artifact(i)))
    store.flush()
    store.compact("s", min_segments=2)
    counting = CountingFS(store.fs)
    reader = CheckpointStore(counting, store.root, job_id="")
    with count_s3_requests(counting.wrapped) as requests:
        loaded = reader.load("s", summary=True)
    assert len(loaded.records) == 1_000
    if "s3" in store.fs.protocol:
        assert requests == {"ListObjectsV2": 1, "GetObject": 2}  # the segment and its index


def test_a_damaged_line_in_an_indexed_segment_is_still_reported_by_line(backend: Backend):
    store = open_store(backend, flush_every=7)
    varied(store)
    store.compact("s", min_segments=2)
    (segment,) = store.load("s").segments
    lines = store.fs.cat_file(segment).splitlines(keepends=True)
    lost = json.loads(lines[2])["key"]
    lines[2] = b'{"stage": "s", "key": \x00\xff garbage\n'
    write_atomic(store.fs, segment, b"".join(lines))  # same index: it no longer matches
    loaded = store.load("s", summary=True)
    assert [d.line for d in loaded.damage] == [3] and lost not in loaded.records
    assert loaded.records == json_summaries(store)


def test_indexing_a_flushed_segment_does_not_import_pandas(tmp_path):
    """``pa.array`` on a list imports pandas: 0.3 s of the driver's CPU at its first flush."""
    probe = f"""
import sys, fsspec
from winnow.storage.checkpoints import CheckpointStore
store = CheckpointStore(fsspec.filesystem("file"), {str(tmp_path)!r}, "j")
for i in range(3):
    store.append({{"stage": "s", "key": f"k{{i}}", "status": "SUCCEEDED", "attempt": 1,
                  "error": None if i else {{"type": "E", "message": "m"}}}})
store.flush()
assert store._listing("s")[1], "no index written"
assert len(store.load("s", summary=True).records) == 3
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
