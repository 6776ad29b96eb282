"""storage/fs.py: ``refresh``, the one cache-freshness step before a look at a path."""

from __future__ import annotations

from typing import Any

from tests.storage.conftest import Backend, peer
from winnow.storage.fs import join, refresh, resolve


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


def test_refresh_accepts_a_filesystem_without_a_cache() -> None:
    class Bare:
        pass

    bare: Any = Bare()
    refresh(bare, "anything")  # nothing to drop, nothing raised
