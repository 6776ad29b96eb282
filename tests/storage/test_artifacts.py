"""Contract suite for the artifact store: the same assertions on every backend.

Every test runs on ``memory://``, ``file://`` and ``s3://`` (a moto server on
loopback, s3fs with its default caches); see ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import re

import pyarrow as pa
import pytest

from tests.storage.conftest import Backend, CountingFS, count_s3_requests, peer
from winnow.errors import IntegrityError
from winnow.storage import artifacts, formats
from winnow.storage.artifacts import (
    ArtifactRef,
    ArtifactStore,
    Fault,
    check_digest,
    output_store_url,
)
from winnow.storage.fs import is_local, join, resolve

FORMATS = ["parquet", "ipc", "jsonl"]
WRITES = {"pipe", "pipe_file", "put_file", "open", "mv", "touch", "rm", "rm_file"}
PUBLISHED = re.compile(r"^sha256/([0-9a-f]{2})/(\1[0-9a-f]{62})\.(parquet|arrow|jsonl)$")


@pytest.fixture
def store(backend: Backend) -> ArtifactStore:
    return ArtifactStore(join(backend.url, "artifacts"), backend.storage_options)


def other_instance(backend: Backend, store: ArtifactStore) -> ArtifactStore:
    """The same store through another filesystem instance, like a Ray actor's."""
    return ArtifactStore(store.root_url, peer(backend).storage_options)


def batch(n: int = 100) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"id": list(range(n)), "text": [f"row {i}" for i in range(n)]}
    )


def stored(store: ArtifactStore) -> list[str]:
    """Digests of every object under the store's root, from a fresh listing.

    Fails on any object that is not a published artifact (a temporary or
    partial write left behind).
    """
    try:
        paths = store.fs.find(store.root)
    except FileNotFoundError:
        paths = []
    digests = []
    for path in paths:
        relative = path[len(store.root) :].lstrip("/")
        match = PUBLISHED.match(relative)
        assert match, f"{relative!r} is left under the store and is not a published artifact"
        digests.append(match.group(2))
    return sorted(digests)


def is_s3(store: ArtifactStore) -> bool:
    return "s3" in store.fs.protocol


@pytest.mark.parametrize("fmt", FORMATS)
def test_put_verify_read_round_trip(store: ArtifactStore, fmt: str):
    ref = store.put(batch(), fmt)
    data = store.read_bytes(ref.uri)
    assert hashlib.sha256(data).hexdigest() == ref.digest
    assert (ref.bytes, ref.records, ref.format) == (len(data), 100, fmt)
    assert ref.uri.endswith(f"/sha256/{ref.digest[:2]}/{ref.digest}.{formats.EXTENSIONS[fmt]}")
    fs, path = resolve(ref.uri, store.storage_options)  # the recorded URI is addressable
    assert path == store.path_of(ref.uri) and fs.cat_file(path) == data
    assert store.verify(ref) == ref
    assert store.read(ref).to_pylist() == batch().to_pylist()
    assert store.read(ref.to_dict()).num_rows == 100
    assert stored(store) == [ref.digest]  # nothing temporary remains


def test_equal_bytes_are_stored_once(store: ArtifactStore):
    first = store.put(batch(), "parquet")
    counting = CountingFS(store.fs)
    store.fs = counting
    with count_s3_requests(counting.wrapped) as requests:
        again = store.put(batch(), "parquet")
    assert again == first
    assert not counting.calls.keys() & WRITES, counting.calls
    assert requests["PutObject"] == 0
    assert stored(store) == [first.digest]
    assert store.sizes() == {first.digest: first.bytes}


def test_serialization_is_deterministic(store: ArtifactStore):
    assert store.put(batch(), "parquet").digest == store.put(batch(), "parquet").digest
    assert store.put(batch(7), "parquet").digest != store.put(batch(8), "parquet").digest


@pytest.mark.parametrize("damaged_by", ["same instance", "other instance"])
def test_damaged_artifact_is_caught_and_put_repairs_it(
    backend: Backend, store: ArtifactStore, damaged_by: str
):
    ref = store.put(batch(), "parquet")
    vandal = store if damaged_by == "same instance" else other_instance(backend, store)
    path = vandal.path_of(ref.uri)
    data = bytearray(vandal.fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    vandal.fs.pipe_file(path, bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        store.verify(ref)
    with pytest.raises(IntegrityError, match="SHA-256"):
        store.read(ref)
    assert stored(store) == [ref.digest]  # a failed verify writes nothing
    assert store.put(batch(), "parquet") == ref
    assert store.verify(ref) == ref and vandal.verify(ref) == ref
    assert stored(store) == [ref.digest]


def test_a_read_back_that_differs_only_in_content_fails_the_commit(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
):
    """Same length, one byte flipped on the way back: no artifact is published."""
    cat_file = store.fs.cat_file

    def flipped(path: str, *args: object, **kwargs: object) -> bytes:
        data = bytearray(cat_file(path, *args, **kwargs))
        data[len(data) // 2] ^= 0x01
        return bytes(data)

    monkeypatch.setattr(store.fs, "cat_file", flipped)
    with pytest.raises(IntegrityError, match="sha256"):
        store.put(batch(), "parquet")
    monkeypatch.undo()
    assert stored(store) == []
    ref = store.put(batch(), "parquet")  # an honest read-back commits
    assert store.verify(ref) == ref


def test_truncated_artifact_reports_bytes(store: ArtifactStore):
    ref = store.put(batch(), "jsonl")
    path = store.path_of(ref.uri)
    store.fs.pipe_file(path, store.fs.cat_file(path)[:-5])
    with pytest.raises(IntegrityError, match="bytes"):
        store.verify(ref)


def test_missing_artifact_is_reported_and_put_restores_it(backend: Backend, store: ArtifactStore):
    ref = store.put(batch(), "parquet")
    assert store.sizes() == {ref.digest: ref.bytes}  # the listing is now cached (s3fs)
    other_instance(backend, store).fs.rm_file(store.path_of(ref.uri))
    with pytest.raises(IntegrityError, match="missing"):
        store.verify(ref)
    assert store.sizes() == {}
    assert store.put(batch(), "parquet") == ref
    assert store.verify(ref) == ref and stored(store) == [ref.digest]


def same_shard_payloads(count: int) -> list[bytes]:
    """One-record JSONL payloads whose digests share a shard (``sha256/<2 hex>/``)."""
    shards: dict[str, list[bytes]] = {}
    for i in itertools.count():
        data = f'{{"i":{i}}}\n'.encode()
        shard = shards.setdefault(hashlib.sha256(data).hexdigest()[:2], [])
        shard.append(data)
        if len(shard) == count:
            return shard
    raise AssertionError("unreachable")


def test_fresh_write_by_another_instance_is_seen_by_the_next_check(
    backend: Backend, store: ArtifactStore
):
    """The driver holds a listing of the shard (s3fs caches it); an actor adds to it."""
    driver, actor = store, other_instance(backend, store)
    first, *rest = same_shard_payloads(5)
    early = driver.put_bytes(first, "jsonl", expected_records=1)
    refs = {early.digest: early.bytes}
    assert driver.sizes() == refs
    for data in rest:
        ref = actor.put_bytes(data, "jsonl", expected_records=1)
        refs[ref.digest] = ref.bytes
        # The driver's existence check must see the actor's object: no second upload.
        counting = CountingFS(driver.fs)
        driver.fs = counting
        with count_s3_requests(counting.wrapped) as requests:
            assert driver.put_bytes(data, "jsonl", expected_records=1) == ref
        driver.fs = counting.wrapped
        assert not counting.calls.keys() & WRITES, counting.calls
        assert requests["PutObject"] == 0
        assert driver.sizes() == refs
    ref = actor.put_bytes(same_shard_payloads(6)[-1], "jsonl", expected_records=1)
    assert driver.verify(ref) == ref  # read back, not answered "missing" from a listing
    assert driver.read(ref).to_pylist() == [json.loads(same_shard_payloads(6)[-1])]
    assert stored(driver) == sorted([*refs, ref.digest])


def test_sizes_lists_every_artifact_in_one_listing(store: ArtifactStore):
    assert store.sizes() == {}
    refs = [store.put(batch(n), fmt) for n in range(1, 6) for fmt in FORMATS]
    counting = CountingFS(store.fs)
    store.fs = counting
    with count_s3_requests(counting.wrapped) as requests:
        sizes = store.sizes()
    assert sizes == {r.digest: r.bytes for r in refs} and len(sizes) == 15
    # A local disk is walked with os.scandir (no fsspec call); elsewhere one find.
    assert counting.calls == ({} if is_local(store.fs) else {"find": 1})
    assert requests == ({"ListObjectsV2": 1} if is_s3(store) else {})


@pytest.mark.parametrize(
    ("data", "records", "schema_fp", "problem"),
    [
        (formats.serialize(batch(), "parquet"), 99, "", "records 100 != 99"),
        (formats.serialize(batch(), "parquet"), 100, "0" * 16, r"schema \w+ != 0000"),
        (b"PAR1 not really parquet", 1, "", "unreadable footer"),
    ],
    ids=["wrong-records", "wrong-schema", "undecodable"],
)
def test_failed_put_leaves_nothing_behind(
    store: ArtifactStore, data: bytes, records: int, schema_fp: str, problem: str
):
    with pytest.raises(IntegrityError, match=problem):
        store.put_bytes(data, "parquet", expected_records=records, expected_schema_fp=schema_fp)
    assert stored(store) == [] and store.sizes() == {}
    ref = store.put(batch(), "parquet")  # and a later put is not fooled by a cache
    assert store.verify(ref) == ref and stored(store) == [ref.digest]


@pytest.mark.parametrize("fmt", ["parquet", "ipc"])
def test_a_commit_reads_the_footer_and_a_full_verify_decodes(store: ArtifactStore, fmt: str):
    """Bytes with a sound footer and a broken body commit (the read-back equals what was
    written; decoding would re-check the serializer); ``verify`` decodes and catches them."""
    good = batch(5000)
    data = bytearray(formats.serialize(good, fmt))
    middle = slice(len(data) // 4, len(data) // 2)  # data pages / buffers: the footer is small
    data[middle] = bytes(len(data[middle]))
    with pytest.raises(IntegrityError, match="does not decode"):
        formats.check(bytes(data), fmt)
    expected = formats.stored_schema_fp(good.schema, fmt)
    ref = store.put_bytes(bytes(data), fmt, expected_records=5000, expected_schema_fp=expected)
    assert (ref.records, ref.schema_fp) == (5000, expected)
    assert store.check(ref) is None  # the quick check: listed with its size
    problem = store.check(ref, full=True)
    assert problem is not None and problem.fault is Fault.UNVERIFIED
    assert f"{fmt} artifact does not decode" in problem.message


def test_store_pickles_to_the_same_root(store: ArtifactStore):
    ref = store.put(batch(), "ipc")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read(ref).to_pylist() == batch().to_pylist()


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/", "0" * 64 + "\n", "0" * 65, ""],
    ids=["traversal", "upper-hex", "short", "slash", "trailing-newline", "long", "empty"],
)
def test_digests_that_are_not_sha256_are_rejected(store: ArtifactStore, bad: str):
    counting = CountingFS(store.fs)
    store.fs = counting
    with pytest.raises(IntegrityError):
        check_digest(bad)
    with pytest.raises(IntegrityError):
        store.path_for(bad, "parquet")
    with pytest.raises(IntegrityError):
        store.read_bytes(f"x/{bad}.parquet")
    with pytest.raises(IntegrityError):
        store.verify(
            ArtifactRef(
                uri=f"x/{bad}.parquet",
                digest=bad,
                bytes=1,
                records=1,
                schema_fp="",
                format="parquet",
            )
        )
    assert counting.calls == {}  # rejected before any storage call


def test_unknown_extension_is_rejected(store: ArtifactStore):
    with pytest.raises(IntegrityError, match="unknown extension"):
        store.path_of(f"x/{'0' * 64}.csv")


def test_check_answers_whether_a_committed_artifact_is_still_good(backend: Backend, store):
    """The one check `plan` and `verify` share: quick by the listing, full by re-hashing."""
    good, flipped = store.put(batch(), "parquet"), store.put(batch(9), "parquet")
    gone = store.put(batch(8), "jsonl")
    writer = other_instance(backend, store)  # damage made elsewhere, as by another process
    data = writer.read_bytes(flipped.uri)
    writer.fs.pipe_file(writer.path_of(flipped.uri), bytes([data[0] ^ 1]) + data[1:])
    writer.fs.rm_file(writer.path_of(gone.uri))
    listing = store.sizes()
    assert store.check(good, listing=listing) is None
    assert store.check(good) is None and store.check(good, full=True) is None
    missing = store.check(gone, listing=listing)
    assert missing is not None and missing.fault == Fault.MISSING
    assert str(missing) == f"artifact {gone.uri} is missing"
    longer = ArtifactRef(**{**good.to_dict(), "bytes": good.bytes + 1})
    wrong = store.check(longer, listing=listing)
    assert wrong is not None and wrong.fault == Fault.WRONG_SIZE
    assert str(wrong) == f"artifact {good.uri}: bytes {good.bytes} != {good.bytes + 1}"
    assert store.check(flipped, listing=listing) is None  # same size: only a re-hash sees it
    damaged = store.check(flipped, full=True)
    assert damaged is not None and damaged.fault == Fault.UNVERIFIED
    assert str(damaged).startswith(f"artifact {flipped.uri}: sha256 ")
    absent = store.check(gone, full=True)
    assert absent is not None and str(absent) == f"artifact {gone.uri} is missing"


def test_for_uri_finds_the_store_that_holds_a_recorded_artifact(backend: Backend, store):
    ref = store.put(batch(), "parquet")
    root = ArtifactStore.root_of(ref.uri)  # as the URI records it
    assert ArtifactStore(root, backend.storage_options).root == store.root
    opened: dict[str, ArtifactStore] = {}
    found = ArtifactStore.for_uri(ref.uri, backend.storage_options, opened)
    assert ArtifactStore.for_uri(ref.uri, backend.storage_options, opened) is found
    assert list(opened) == [root]
    assert found.read(ref).to_pylist() == batch().to_pylist()
    assert ArtifactStore.for_uri(ref.uri, backend.storage_options).check(ref) is None
    assert output_store_url(backend.url + "/") == join(backend.url, "artifacts")


def test_files_lists_published_and_unfinished_writes_and_remove_deletes_one(
    backend: Backend, store
):
    ref = store.put(batch(), "jsonl")
    assert store.files(temporary=True) == []
    stray = join(store.root, "tmp", f"{'0' * 64}.deadbeef.partial")
    writer = other_instance(backend, store)  # written elsewhere: a fresh listing sees it
    writer.fs.pipe_file(stray, b"half")
    [published] = store.files()
    assert (published.digest, published.bytes) == (ref.digest, ref.bytes)
    assert published.path == store.path_of(ref.uri) and published.modified is not None
    [temporary] = store.files(temporary=True)
    assert (temporary.path, temporary.digest, temporary.bytes) == (stray, "0" * 64, 4)
    store.remove(stray)
    assert store.files(temporary=True) == []


def test_open_reads_an_artifacts_bytes_and_dataset_spans_stores(backend: Backend, store):
    ref = store.put(batch(), "parquet")
    with store.open(ref) as fh:
        assert fh.read() == store.read_bytes(ref.uri)
    other = ArtifactStore(join(backend.url, "elsewhere"), backend.storage_options)
    later = other.put(batch(7), "parquet")
    table = artifacts.dataset([ref, later], backend.storage_options).to_table()
    assert table.to_pylist() == batch().to_pylist() + batch(7).to_pylist()
