"""Contract suite for the artifact store: the same assertions on every backend."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from winnow.errors import IntegrityError
from winnow.storage.artifacts import ArtifactRef, ArtifactStore, check_digest


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "memory":
        return ArtifactStore(f"memory://winnow-test-{uuid.uuid4().hex}/artifacts")
    return ArtifactStore(str(tmp_path / "artifacts"))


def batch(n: int = 100) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"id": list(range(n)), "text": [f"row {i}" for i in range(n)]}
    )


@pytest.mark.parametrize("fmt", ["parquet", "ipc", "jsonl"])
def test_put_is_content_addressed_verified_and_deduplicated(store: ArtifactStore, fmt: str):
    ref = store.put(batch(), fmt)
    data = store.read_bytes(ref.uri)
    assert hashlib.sha256(data).hexdigest() == ref.digest
    assert len(data) == ref.bytes and ref.records == 100
    assert f"/sha256/{ref.digest[:2]}/{ref.digest}." in ref.uri
    again = store.put(batch(), fmt)
    assert again.uri == ref.uri
    assert list(store.sizes()) == [ref.digest]  # equal bytes stored once
    assert store.read(ref).to_pylist() == batch().to_pylist() or fmt == "jsonl"
    assert not store.fs.exists(f"{store.root}/tmp") or not store.fs.ls(f"{store.root}/tmp")


def test_serialization_is_deterministic(store: ArtifactStore):
    assert store.put(batch(), "parquet").digest == store.put(batch(), "parquet").digest
    assert store.put(batch(7), "parquet").digest != store.put(batch(8), "parquet").digest


def test_flipped_byte_is_caught_and_put_repairs_it(store: ArtifactStore):
    ref = store.put(batch(), "parquet")
    path = store.path_of(ref.uri)
    data = bytearray(store.fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    store.fs.pipe_file(path, bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        store.verify(ref)
    with pytest.raises(IntegrityError):
        store.read(ref)
    repaired = store.put(batch(), "parquet")
    assert store.verify(repaired).digest == ref.digest


def test_truncated_artifact_reports_bytes(store: ArtifactStore):
    ref = store.put(batch(), "jsonl")
    path = store.path_of(ref.uri)
    store.fs.pipe_file(path, store.fs.cat_file(path)[:-5])
    with pytest.raises(IntegrityError, match="bytes"):
        store.verify(ref)


def test_missing_artifact_is_reported(store: ArtifactStore):
    ref = store.put(batch(), "parquet")
    store.fs.rm_file(store.path_of(ref.uri))
    with pytest.raises(IntegrityError, match="missing"):
        store.verify(ref)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/"])
def test_digests_that_are_not_sha256_are_rejected(store: ArtifactStore, bad: str):
    with pytest.raises(IntegrityError):
        check_digest(bad)
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
