"""Discovering inputs: files, folders and globs on any fsspec URL.

Each file found has the identity that decides whether its batches are still
the ones committed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from winnow.errors import InputError
from winnow.storage.fs import is_local, resolve, to_url

_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
}
# The name of a chunk of in-memory input (``inmemory://chunk-000003``): not an fsspec URL.
MEMORY_PREFIX = "inmemory://"
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "lzma"}


@dataclass(frozen=True)
class SourceFile:
    """An input file as discovered: URL, format, compression, size and version.

    The version is the ETag, generation or modification time (``sha256=...``
    for a chunk of in-memory data); with the URL and size it makes the file's
    identity. ``location`` is where its bytes are read when that is not
    ``url``: a chunk of in-memory data is named ``inmemory://chunk-<n>`` and
    read from its artifact (see ``sources.memory``).
    """

    url: str
    format: str
    compression: str | None
    size: int
    version: str
    location: str | None = None

    @property
    def read_url(self) -> str:
        """Where the file's bytes are read: ``location``, else ``url``."""
        return self.location or self.url

    @property
    def identity(self) -> str:
        """SHA-256 of URL, size and version: a changed file has a new identity."""
        text = f"{self.url}|{self.size}|{self.version}"
        return hashlib.sha256(text.encode()).hexdigest()


def detect(path: str) -> tuple[str, str | None] | None:
    """(format, compression) from a file name's extensions, or None if not an input."""
    name = posixpath.basename(path).lower()
    stem, ext = posixpath.splitext(name)
    compression = _COMPRESSIONS.get(ext)
    if compression:
        stem, ext = posixpath.splitext(stem)
    fmt = _FORMATS.get(ext)
    if fmt is None or (compression and fmt not in ("jsonl", "csv")):
        return None
    return fmt, compression


def _version(info: dict[str, Any]) -> str:
    for key in ("VersionId", "generation", "ETag", "etag", "md5Hash"):
        if info.get(key):
            return f"{key}={info[key]}"
    for key in ("mtime", "LastModified", "updated", "created"):
        value = info.get(key)
        if value is not None:
            # One form for one time: a filesystem may give a datetime from info()
            # and a timestamp from a listing (fsspec's memory:// does).
            stamp = value.timestamp() if isinstance(value, datetime) else value
            return f"{key}={stamp}"
    return ""


def discover(
    inputs: Sequence[str], storage_options: dict[str, Any] | None = None
) -> list[SourceFile]:
    """Expand files, folders and globs into a sorted, de-duplicated file list."""
    found: dict[str, SourceFile] = {}
    for url in inputs:
        if url.startswith(MEMORY_PREFIX):
            raise InputError(
                f"input {url!r} was a chunk of data passed in memory to "
                "winnow.run(pipeline, input=...), which no file holds: run winnow.run with "
                "the same data again (its committed batches are skipped)"
            )
        fs, path = resolve(url, storage_options)
        if any(ch in path for ch in "*?["):
            matches = fs.glob(path, detail=True)
            infos = {p: i for p, i in matches.items() if i.get("type") != "directory"}
        else:
            try:
                info = fs.info(path)
            except FileNotFoundError:
                raise InputError(
                    f"input {url!r} does not exist; check the path or pass --input with an "
                    "existing file, folder or glob"
                ) from None
            except PermissionError as exc:
                raise InputError(
                    f"input {url!r} is not readable ({exc}); fix its permissions"
                ) from None
            if info.get("type") == "directory":
                infos = {p: i for p, i in fs.find(path, detail=True).items()}
            else:
                _refuse_special(fs, path)
                infos = {path: info}
        matched = 0
        for path_i, info in sorted(infos.items()):
            kind = detect(path_i)
            if kind is None:
                continue
            _refuse_special(fs, path_i)
            matched += 1
            full = to_url(fs, path_i)
            found[full] = SourceFile(
                url=full,
                format=kind[0],
                compression=kind[1],
                size=int(info.get("size") or 0),
                version=_version(info),
            )
        if matched == 0:
            raise InputError(
                f"input {url!r} holds no readable files (JSONL[.gz|.zst], Parquet, CSV, "
                "Arrow IPC); pass files with one of those extensions"
            )
    return [found[k] for k in sorted(found)]


def changed_since(
    files: Sequence[SourceFile], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """The URLs of ``files`` whose identity (size, version) is no longer what it was.

    Chunks of in-memory data are content-addressed and never change. A file
    that is gone counts as changed.
    """
    urls = [f.url for f in files if not f.url.startswith(MEMORY_PREFIX)]
    now: dict[str, str] = {}
    for url in urls:
        try:
            now.update({f.url: f.identity for f in discover([url], storage_options)})
        except InputError:
            continue
    return [f.url for f in files if f.url in urls and now.get(f.url) != f.identity]


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_special(fs: Any, path: str) -> None:
    """Refuse a local path that is not a regular file, without opening it.

    Opening a FIFO blocks until a writer comes (planning hung, deaf to SIGTERM).

    Raises:
        InputError: naming the path, what it is and the fix.
    """
    try:
        mode = os.stat(path).st_mode if is_local(fs) else stat.S_IFREG
    except OSError:
        return  # reported where the file is opened
    if stat.S_ISREG(mode):
        return
    what = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
    raise InputError(
        f"input {path!r} is {what}, not a regular file: Winnow splits inputs by their "
        "size and reads them again on a retry, which a pipe, device or socket cannot give. "
        "Save the data to a regular file first and pass that with --input."
    )
