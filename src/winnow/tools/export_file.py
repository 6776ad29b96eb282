"""One export file: written while it is hashed and counted, then read back and checked."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.errors import IntegrityError
from winnow.storage.formats import serialize
from winnow.storage.fs import is_local, refresh

_CHUNK = 8 << 20


@dataclass(frozen=True)
class ExportedFile:
    """One file an export wrote and read back: its rows, size and SHA-256."""

    name: str
    rows: int
    bytes: int
    sha256: str


def write_checked(
    fs: Any,
    path: str,
    tables: Any,
    fmt: str,
    schema: pa.Schema | None,
    name: str,
) -> ExportedFile:
    """Write ``tables`` as one file at ``path``, read it back and check it."""
    rows, writer = 0, None
    with DigestingFile.open(fs, path) as out:
        try:
            if schema is not None:
                writer = pq.ParquetWriter(out, schema, compression="zstd")
            for table in tables:
                rows += table.num_rows
                if fmt == "jsonl":
                    for batch in table.to_batches():
                        out.write(serialize(batch, "jsonl"))
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema, compression="zstd")
                writer.write_table(table if schema is None else conform(table, schema))
        except BaseException:
            if writer is not None:  # now, not in its __del__ after the file is closed
                with contextlib.suppress(Exception):
                    writer.close()
            raise
        if writer is not None:
            writer.close()
    written = ExportedFile(name=name, rows=rows, bytes=out.size, sha256=out.sha.hexdigest())
    back = read_back(fs, path, fmt)
    if back != (written.rows, written.bytes, written.sha256):
        raise IntegrityError(
            f"export file {name}: read back {back[0]} rows, {back[1]} bytes, sha256 "
            f"{back[2][:12]}…; wrote {rows} rows, {out.size} bytes, sha256 "
            f"{written.sha256[:12]}…. Nothing was published; run the export again"
        )
    return written


def read_back(fs: Any, path: str, fmt: str) -> tuple[int, int, str]:
    """Rows (Parquet footer, JSONL lines), size and SHA-256 of the file as stored."""
    refresh(fs, path)
    sha, size, lines, last = hashlib.sha256(), 0, 0, b"\n"
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if fmt == "parquet":
        try:
            with fs.open(path, "rb") as fh:
                rows = pq.read_metadata(fh).num_rows
        except (pa.ArrowException, OSError):
            rows = -1  # no valid footer: a torn file
    else:
        rows = lines if last == b"\n" else -1  # a JSONL file ends with a newline
    return rows, size, sha.hexdigest()


class DigestingFile:
    """A file open for writing that hashes and counts what passes through it."""

    closed = False  # what pyarrow asks before it writes

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    @classmethod
    @contextlib.contextmanager
    def open(cls, fs: Any, path: str) -> Iterator[DigestingFile]:
        """Open ``path``; on a local disk the file is fsynced before it is closed."""
        if not is_local(fs):
            with fs.open(path, "wb") as fh:
                yield cls(fh)
            return
        with open(path, "wb") as fh:
            yield cls(fh)
            fh.flush()
            os.fsync(fh.fileno())

    def write(self, data: Any) -> int:
        """Hash, count and write ``data``; how many bytes were written."""
        data = bytes(data)
        self.sha.update(data)
        self.size += len(data)
        self.fh.write(data)
        return len(data)

    def flush(self) -> None:
        """Flush the underlying file."""
        self.fh.flush()

    def close(self) -> None:
        """The opener closes the file (pyarrow's writer calls this first)."""


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order (absent ones as nulls)."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
