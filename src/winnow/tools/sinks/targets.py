"""Which sink a ``--format`` names, opened on its target."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from winnow.errors import UsageError
from winnow.storage.fs import is_local, resolve
from winnow.tools.sinks import Sink


def open_sink(
    fmt: str,
    to: str | None,
    storage_options: dict[str, Any] | None,
    *,
    table: str | None,
    catalog: str | None,
    pipeline: str,
) -> Sink:
    """The sink for ``fmt`` on ``to`` (Iceberg: or on ``catalog``'s ``table``).

    Raises:
        UsageError: the format's extra is not installed, or the target is not
            one this format takes.
    """
    if fmt == "iceberg":
        from winnow.tools.sinks.to_iceberg import IcebergSink

        if catalog is None and to is None:
            raise UsageError("--format iceberg needs --to FOLDER or --catalog NAME")
        if catalog is not None and to is not None:
            raise UsageError("--format iceberg takes --to FOLDER or --catalog NAME, not both")
        name = table if table is not None else f"winnow.{_identifier(pipeline)}"
        if name.count(".") < 1 or not all(name.split(".")):
            raise UsageError(f"--table {name!r}: name an Iceberg table as namespace.name")
        if to is not None and name.count(".") > 1:  # pyiceberg's SQL catalog: one level
            raise UsageError(
                f"--table {name!r}: the catalog in --to takes namespace.name, one namespace "
                "deep; Fix: drop the extra level (or use a --catalog that nests namespaces)"
            )
        folder = None if to is None else local_path(to, storage_options, "iceberg")
        return IcebergSink(name, folder, catalog)
    if table is not None or catalog is not None:
        raise UsageError(f"--table and --catalog are for --format iceberg, not {fmt}")
    if to is None:
        raise UsageError(f"--format {fmt} needs --to, the table's path")
    path = local_path(to, storage_options, fmt)
    if fmt == "delta":
        from winnow.tools.sinks.to_delta import DeltaSink

        return DeltaSink(path, to)
    if fmt == "lance":
        from winnow.tools.sinks.to_lance import LanceSink

        return LanceSink(path, to)
    raise UsageError(f"--format {fmt!r}: choose delta, iceberg or lance")


def local_path(to: str, storage_options: dict[str, Any] | None, fmt: str) -> str:
    """``to`` as an absolute local path; object storage, or a file, is refused."""
    fs, path = resolve(to, storage_options)
    if not is_local(fs):
        hint = " or pass --catalog NAME (a pyiceberg catalog)" if fmt == "iceberg" else ""
        raise UsageError(
            f"--to {to!r}: a --format {fmt} export writes to a local path for now; "
            f"Fix: pass a local folder{hint}"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(
            f"--to {to!r} is a file; a --format {fmt} export writes a table's folder; "
            "nothing was written. Fix: pass a new folder or the table's own"
        )
    return os.path.abspath(path)


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "output"


@contextlib.contextmanager
def table_lock(to: str | None, storage_options: dict[str, Any] | None, fmt: str) -> Iterator[None]:
    """Hold ``.<name>.winnow-export.lock`` beside a local table for one export.

    Delta and Lance accept concurrent appends, and pyiceberg rebases an
    append over a concurrent commit, so two exports of one job at once would
    both commit; the lock (``flock``, let go by the kernel when the process
    ends, even killed) makes the second one stop instead. A catalog's table
    (``to`` is None) is not locked.

    Raises:
        UsageError: another export into this table is running.
    """
    if to is None:
        yield
        return
    path = local_path(to, storage_options, fmt)
    parent, name = os.path.split(path.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(os.path.join(parent, f".{name}.winnow-export.lock"), os.O_CREAT | os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            raise UsageError(
                f"another export into --to {to!r} is running (pid {holder}); nothing was "
                "written. Fix: wait for it to finish, then export again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
