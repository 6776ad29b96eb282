"""storage/fs.py: ``refresh``, the one cache-freshness step before a look at a path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.storage.conftest import Backend, peer
from winnow.storage.fs import (
    file_sizes,
    is_temporary,
    join,
    modified_at,
    name_sizes,
    refresh,
    resolve,
    write_atomic,
    write_streamed,
)


def test_refresh_shows_what_another_instance_wrote_and_removed(backend: Backend) -> None:
    fs, root = resolve(backend.url, backend.storage_options)
    other, _ = resolve(backend.url, peer(backend).storage_options)
    folder = join(root, "listing")
    path = join(folder, "a.json")
    other.makedirs(folder, exist_ok=True)
    other.pipe_file(join(folder, "first.json"), b"{}")
    refresh(fs, folder)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(folder)) == ["first.json"]  # cached now

    other.pipe_file(path, b"{}")
    refresh(fs, folder)
    assert fs.exists(path) and len(fs.find(folder)) == 2

    other.rm_file(path)
    refresh(fs, path)
    assert not fs.exists(path)


def test_file_sizes_lists_every_file_at_any_depth_as_find_does(backend: Backend) -> None:
    fs, root = resolve(backend.url, backend.storage_options)
    folder = join(root, "sizes")
    files = {"a.bin": b"1", "x/b.bin": b"22", "x/y/c.bin": b"333", "x/y/z/d": b""}
    for name, data in files.items():
        path = join(folder, name)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, data)
    sizes = file_sizes(fs, folder)
    assert sizes == {p: int(i["size"]) for p, i in fs.find(folder, detail=True).items()}
    assert sorted(sizes.values()) == [0, 1, 2, 3]
    assert file_sizes(fs, join(root, "no-such-folder")) == {}
    names = sorted(name_sizes(fs, folder))
    assert names == sorted((p.rsplit("/", 1)[-1], n) for p, n in sizes.items())
    assert list(name_sizes(fs, join(root, "no-such-folder"))) == []


def test_refresh_accepts_a_filesystem_without_a_cache() -> None:
    class Bare:
        pass

    bare: Any = Bare()
    refresh(bare, "anything")  # nothing to drop, nothing raised


def test_modified_at_reads_each_filesystems_own_field() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert modified_at({"mtime": when.timestamp()}) == when  # local
    assert modified_at({"LastModified": when}) == when  # s3fs
    assert modified_at({"updated": "2024-05-01T12:00:00Z"}) == when  # gcsfs
    assert modified_at({"created": datetime(2024, 5, 1, 12, 0)}) == when  # no zone: UTC
    assert modified_at({"mtime": "not a time", "created": when}) == when
    assert modified_at({"size": 3}) is None


def test_is_temporary_knows_every_unfinished_write() -> None:
    assert is_temporary("/state/jobs/j.json.tmp-0123abcd")  # write_atomic's, local
    assert is_temporary("/state/.write-probe-0123abcd")
    assert not is_temporary("/state/jobs/j.json") and not is_temporary("/tmp-folder/x.json")


def test_write_atomic_takes_its_bytes_whole_or_in_chunks(backend: Backend) -> None:
    fs, root = resolve(backend.url, backend.storage_options)
    whole, chunked = join(root, "out", "whole.json"), join(root, "out", "chunked.json")
    write_atomic(fs, whole, b'{"a": [1, 2]}')
    write_atomic(fs, chunked, (part for part in (b'{"a": ', b"[1, ", b"2]}")))
    refresh(fs, join(root, "out"))
    assert fs.cat_file(whole) == fs.cat_file(chunked) == b'{"a": [1, 2]}'
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(join(root, "out"))) == [
        "chunked.json",
        "whole.json",
    ]  # no temporary left beside them


def test_write_atomic_of_chunks_that_fail_part_way_leaves_the_old_file_and_no_temporary(
    backend: Backend,
) -> None:
    fs, root = resolve(backend.url, backend.storage_options)
    path = join(root, "out", "merged.jsonl")
    write_atomic(fs, path, b"old\n")

    def chunks() -> Iterator[bytes]:
        yield b"new, half of it\n"
        raise ValueError("the source changed while it was copied")

    with pytest.raises(ValueError, match="source changed"):
        write_atomic(fs, path, chunks())
    refresh(fs, join(root, "out"))
    assert fs.cat_file(path) == b"old\n"
    assert [p.rsplit("/", 1)[-1] for p in fs.find(join(root, "out"))] == ["merged.jsonl"]


def test_write_streamed_publishes_the_chunks_whole_in_parts(backend: Backend) -> None:
    fs, root = resolve(backend.url, backend.storage_options)
    path = join(root, "out", "merged.jsonl")
    lines = [b"%07d %s\n" % (i, b"x" * 1000) for i in range(11_000)]  # 11 MiB: 2 parts
    write_streamed(fs, path, iter(lines))
    refresh(fs, join(root, "out"))
    assert fs.cat_file(path) == b"".join(lines)
    assert [p.rsplit("/", 1)[-1] for p in fs.find(join(root, "out"))] == ["merged.jsonl"]


def test_write_streamed_of_chunks_that_fail_part_way_leaves_nothing(backend: Backend) -> None:
    fs, root = resolve(backend.url, backend.storage_options)
    path = join(root, "out", "merged.jsonl")

    def chunks() -> Iterator[bytes]:
        yield b"x" * (9 << 20)  # a part is uploaded before the failure
        raise ValueError("the source changed while it was copied")

    with pytest.raises(ValueError, match="source changed"):
        write_streamed(fs, path, chunks())
    refresh(fs, root)
    assert [p for p in fs.find(root) if "merged" in p] == []
