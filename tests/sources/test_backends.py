"""The sources contract on every storage backend: ``memory://``, ``file://`` and ``s3://``
(a real S3 API server on loopback). Discovery, row counts, batch splits, range reads,
schema checks and change detection behave the same wherever the inputs live."""

from __future__ import annotations

import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from tests.sources.test_files import ROWS, SCHEMA, write_all
from tests.storage.conftest import Backend, backend  # noqa: F401  (the backend fixture)
from winnow import sources
from winnow.errors import InputError


def upload(tmp_path: Path, root: Backend) -> list[str]:
    """Every format of test_files, copied under ``root``; their URLs, sorted."""
    fs, _ = fsspec.core.url_to_fs(root.url, **root.storage_options)
    urls = []
    for path in write_all(tmp_path).values():
        url = f"{root.url}/inputs/{path.name}"
        fs.makedirs(fs._parent(fs._strip_protocol(url)), exist_ok=True)
        fs.pipe_file(fs._strip_protocol(url), path.read_bytes())
        urls.append(url)
    return sorted(urls)


def test_a_folder_and_a_glob_find_the_same_files_in_order(tmp_path: Path, backend: Backend):  # noqa: F811
    urls = upload(tmp_path, backend)
    opts = backend.storage_options
    by_folder = sources.discover([f"{backend.url}/inputs"], opts)
    by_glob = sources.discover([f"{backend.url}/inputs/*", urls[0]], opts)  # one named twice
    assert [f.url.rsplit("/", 1)[-1] for f in by_folder] == [u.rsplit("/", 1)[-1] for u in urls]
    # however a file is named, it is the same file: the same identity, so the same keys
    assert [f.identity for f in by_glob] == [f.identity for f in by_folder]


def test_every_format_counts_splits_and_reads_the_same_rows(tmp_path: Path, backend: Backend):  # noqa: F811
    upload(tmp_path, backend)
    opts = backend.storage_options
    for f in sources.discover([f"{backend.url}/inputs"], opts):
        stats = sources.file_stats(f, opts)
        assert stats["rows"] == len(ROWS), f.url
        sources.check_schema(f, SCHEMA, opts)
        batches = sources.split(f, stats, 10, "fp")
        assert [(b.start, b.stop) for b in batches] == [(0, 10), (10, 20), (20, 23)]
        out = list(sources.read(f, [(b.start, b.stop) for b in batches], SCHEMA, opts))
        assert [r for batch, _ in out for r in batch.to_pylist()] == ROWS, f.url
        [(middle, bad)] = list(sources.read(f, [(10, 20)], SCHEMA, opts))
        assert middle.column("id").to_pylist() == list(range(10, 20)) and not bad


def test_a_rewritten_file_gets_a_new_identity_and_new_keys(tmp_path: Path, backend: Backend):  # noqa: F811
    fs, _ = fsspec.core.url_to_fs(backend.url, **backend.storage_options)
    url = f"{backend.url}/inputs/a.jsonl"
    path = fs._strip_protocol(url)
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, b'{"id": 1, "text": "one"}\n')
    [before] = sources.discover([url], backend.storage_options)
    time.sleep(1.1)  # a local mtime has whole-second resolution on some filesystems
    fs.pipe_file(path, b'{"id": 1, "text": "uno"}\n')
    fs.invalidate_cache()
    [after] = sources.discover([url], backend.storage_options)
    assert after.identity != before.identity
    stats = {"rows": 1}
    assert (
        sources.split(after, stats, 10, "fp")[0].key
        != sources.split(before, stats, 10, "fp")[0].key
    )


def test_missing_inputs_and_wrong_columns_are_named(tmp_path: Path, backend: Backend):  # noqa: F811
    opts = backend.storage_options
    with pytest.raises(InputError, match=r"nothing\.jsonl"):
        sources.discover([f"{backend.url}/nothing.jsonl"], opts)
    upload(tmp_path, backend)
    [parquet] = sources.discover([f"{backend.url}/inputs/d.parquet"], opts)
    other = pa.schema([("id", pa.int64()), ("title", pa.string())])
    with pytest.raises(InputError, match=r"d\.parquet.*missing columns title"):
        sources.check_schema(parquet, other, opts)
