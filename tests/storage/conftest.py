"""Storage backends for the contract suites: ``memory://``, ``file://`` and ``s3://``.

The S3 backend is a real S3 API server (moto in server mode) on loopback, reached
through s3fs with its default caches (instance cache, listing cache), as in
production: a test that passes here with a stale cache would fail in a run.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import fsspec
import pytest

from tests.s3_fixtures import s3_options

# Calls that reach storage; the others (protocol helpers, cache bookkeeping) do not.
IO_METHODS = frozenset(
    {
        "cat",
        "cat_file",
        "exists",
        "find",
        "glob",
        "info",
        "isdir",
        "isfile",
        "ls",
        "makedirs",
        "mkdir",
        "mv",
        "open",
        "pipe",
        "pipe_file",
        "put_file",
        "rm",
        "rm_file",
        "size",
        "sizes",
        "touch",
        "walk",
    }
)


class Backend(NamedTuple):
    """A fresh, empty root on one backend and the options to reach it."""

    url: str
    storage_options: dict[str, Any]


class CountingFS:
    """An fsspec filesystem that counts the storage calls made through it."""

    def __init__(self, fs: Any) -> None:
        self.wrapped = fs
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if name not in IO_METHODS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@contextlib.contextmanager
def count_s3_requests(fs: Any) -> Iterator[Counter[str]]:
    """Count the HTTP requests s3fs sends, by operation; an empty counter elsewhere.

    Counted on botocore's ``before-send`` event, so every page of a paginated
    listing and every GET of a multi-file ``cat`` is one request.
    """
    counts: Counter[str] = Counter()
    if "s3" not in fs.protocol:
        yield counts
        return
    fs.connect()  # the client is created lazily; make sure there is one to hook

    def before_send(request: Any, **kwargs: Any) -> None:
        counts[kwargs["event_name"].rsplit(".", 1)[-1]] += 1

    fs.s3.meta.events.register("before-send.s3", before_send)
    try:
        yield counts
    finally:
        fs.s3.meta.events.unregister("before-send.s3", before_send)


@pytest.fixture(params=["memory", "file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """One fresh root per test on each backend: ``(url, storage_options)``."""
    if request.param == "memory":
        root = f"winnow-test-{uuid.uuid4().hex}"
        yield Backend(f"memory://{root}", {})
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{root}"):
            fs.rm(f"/{root}", recursive=True)
    elif request.param == "file":
        yield Backend((tmp_path / "root").as_uri(), {})
    else:
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_server")
        yield Backend(f"s3://{bucket}/root", s3_options(endpoint))


def peer(backend: Backend) -> Backend:
    """The same root through a second filesystem instance.

    A Ray actor and the driver hold separate instances (and separate s3fs
    listing caches); writing through one and checking through the other proves
    a fresh write is seen without a shared cache.
    """
    return Backend(backend.url, {**backend.storage_options, "skip_instance_cache": True})
