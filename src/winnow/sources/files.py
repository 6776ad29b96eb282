"""Sources: input files split into deterministic batches of at most ``batch_rows``.

A batch's key depends on the file's identity (URL, size, and mtime, ETag or
version) and its row range, so an unchanged input maps to the same batches on
every run and a changed file re-processes only its own batches. Files are read
as streams, or a Parquet batch aligned with row groups by its own row groups;
nothing reads a whole file into memory. ``pyarrow.parquet`` and ``pyarrow.ipc``
are imported where a file is read: planning from cached row counts (an
all-skipped rerun) needs neither.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from winnow.errors import InputError
from winnow.sources import conform, csvfile, jsonl
from winnow.sources.discover import SourceFile
from winnow.sources.jsonl import BadRecord
from winnow.sources.zstd import ZstdReader
from winnow.storage.fs import is_local, resolve

# In every source batch's key: bump it when what a reader yields for a file changes,
# so batches cached under the old reader are read again (2: rows not fitting the
# schema and ragged CSV rows are bad records).
READER_VERSION = 2


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Rows ``[start, stop)`` of one file; ``key`` is the batch's identity.

    ``by_range``: the batch can be read on its own, touching no rows outside
    its range (see ``range_readable``); otherwise its file is read as one
    stream from the start.
    """

    file: SourceFile
    index: int
    start: int
    stop: int
    key: str
    by_range: bool = False


def reader_fingerprint(schema: pa.Schema | None, on_bad_record: str) -> str:
    """What, besides the file, decides the rows a source batch yields."""
    text = f"{schema}|{on_bad_record}" if schema is not None else f"infer|{on_bad_record}"
    text = f"reader={READER_VERSION}|{text}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split(
    file: SourceFile, stats: dict[str, Any], batch_rows: int, reader_fp: str
) -> list[SourceBatch]:
    """``file``'s batches, from its ``file_stats`` (row count, row groups)."""
    rows = int(stats["rows"])
    by_range = range_readable(file, stats, batch_rows)
    batches = []
    for index, start in enumerate(range(0, rows, batch_rows)):
        stop = min(start + batch_rows, rows)
        key = hashlib.sha256(f"{file.identity}|{reader_fp}|{start}|{stop}".encode()).hexdigest()
        batches.append(SourceBatch(file, index, start, stop, key, by_range))
    return batches


def range_readable(file: SourceFile, stats: dict[str, Any], batch_rows: int) -> bool:
    """Whether each batch of ``file`` can be read alone without reading extra rows.

    A Parquet file whose row groups all hold the same number of rows (the last
    may hold fewer), a divisor of ``batch_rows``: every batch then starts on a
    row-group boundary and decodes exactly its own row groups. Any other file
    (row groups larger than a batch or unaligned, JSONL, CSV, IPC) is read as
    one stream, so no row is decoded twice.
    """
    group = int(stats.get("row_group_rows") or 0)
    return file.format == "parquet" and group > 0 and batch_rows % group == 0


def _open(file: SourceFile, storage_options: dict[str, Any] | None) -> Any:
    fs, path = resolve(file.read_url, storage_options)
    try:
        if is_local(fs) and file.compression is None and file.format in ("parquet", "ipc"):
            # Arrow's own file reads without a Python file object in between
            # (about a quarter less time per Parquet batch on a local disk).
            return pa.OSFile(path)
        if file.compression == "zstd":
            return ZstdReader(fs.open(path, "rb"))  # notices a .zst cut short
        return fs.open(path, "rb", compression=file.compression)
    except (FileNotFoundError, PermissionError) as exc:
        raise InputError(f"input {file.url!r} cannot be opened ({exc})") from None


def file_stats(
    file: SourceFile, storage_options: dict[str, Any] | None = None, schema: pa.Schema | None = None
) -> dict[str, int]:
    """``rows`` in a file (lines for JSONL), streaming; Parquet and IPC use metadata.

    For Parquet also ``row_group_rows``: the rows of each row group when all
    but the last hold the same number, else 0. Given the pipeline's ``schema``,
    a file whose columns are known up front (Parquet, IPC, a CSV header) is
    checked against it, as ``check_schema`` does.

    Raises:
        InputError: the file is not a readable file of its format, or does not
            match ``schema`` (exit 2, naming it).
    """
    import pyarrow.parquet as pq

    found: pa.Schema | None = None
    with _reading(file), _open(file, storage_options) as fh:
        if file.format == "parquet":
            parquet = pq.ParquetFile(fh)
            meta, found = parquet.metadata, parquet.schema_arrow
            groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            uniform = bool(groups) and all(n == groups[0] for n in groups[:-1])
            uniform = uniform and groups[-1] <= groups[0]
            stats = {"rows": int(meta.num_rows), "row_group_rows": groups[0] if uniform else 0}
        elif file.format == "ipc":
            found, batches = _ipc_open(fh)
            stats = {"rows": sum(b.num_rows for b in batches)}
        elif file.format == "csv":
            rows, found = csvfile.count_rows(file.url, fh)
            stats = {"rows": rows}
        else:
            stats = {"rows": jsonl.count_lines(fh)}
    if schema is not None and found is not None:
        conform.check(file.url, found, schema)
    return stats


def check_schema(
    file: SourceFile, schema: pa.Schema | None, storage_options: dict[str, Any] | None = None
) -> None:
    """Refuse a file whose columns, known up front, cannot fit the pipeline's ``schema``.

    Reads a Parquet footer, an IPC schema or a CSV header, nothing more; JSONL
    records are checked one by one as they are read.

    Raises:
        InputError: naming the file, its missing, extra or uncastable columns and the fix.
    """
    import pyarrow.parquet as pq

    if schema is None or file.format == "jsonl":
        return
    with _reading(file), _open(file, storage_options) as fh:
        if file.format == "parquet":
            found = pq.ParquetFile(fh).schema_arrow
        elif file.format == "ipc":
            found = _ipc_open(fh)[0]
        else:
            found = csvfile.columns(file.url, fh)
    conform.check(file.url, found, schema)


@contextlib.contextmanager
def _reading(file: SourceFile) -> Iterator[None]:
    """Turn a file that cannot be read into an ``InputError`` naming it (exit 2)."""
    try:
        yield
    except InputError:
        raise
    except EOFError as exc:  # a CSV's compressed stream breaks off (JSONL keeps its rows)
        raise InputError(
            f"input {file.url!r} is cut short ({exc}): the copy was interrupted or the file "
            "is damaged; copy it again, or leave it out of --input"
        ) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(
            f"input {file.url!r} is not a readable {file.format} file ({type(exc).__name__}: "
            f"{exc}); fix or remove it, or leave it out of --input"
        ) from None


def read(
    file: SourceFile,
    ranges: Sequence[tuple[int, int]],
    schema: pa.Schema | None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[tuple[pa.RecordBatch, list[BadRecord]]]:
    """Yield one batch (and its bad records) per ``(start, stop)`` range, in order.

    With a ``schema``, rows that do not fit it (see ``conform``) are bad records.
    """
    ranges = sorted(ranges)
    with _open(file, storage_options) as fh:
        if file.format == "jsonl":
            yield from jsonl.read(file.url, fh, ranges, schema)
            return
        if file.format == "csv":
            yield from csvfile.read(file.url, fh, ranges, schema)
            return
        if file.format == "parquet":
            stream = _parquet_stream(fh, ranges)
        else:
            stream = _offsets(_ipc_open(fh)[1])
        for (start, stop), batch in zip(ranges, _cut(stream, ranges), strict=True):
            if schema is None:
                yield batch, []
            else:
                yield conform.conform(batch, schema, file.url, range(start + 1, stop + 1))


def _offsets(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    offset = 0
    for batch in batches:
        yield offset, batch
        offset += batch.num_rows


def _parquet_stream(
    fh: Any, ranges: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, pa.RecordBatch]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fh)
    offset = 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if any(start < offset + n and stop > offset for start, stop in ranges):
            for batch in pf.iter_batches(batch_size=65536, row_groups=[rg]):
                yield offset, batch
                offset += batch.num_rows
        else:
            offset += n


def _ipc_open(fh: Any) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """An Arrow IPC file's or stream's schema and its batches."""
    import pyarrow.ipc as ipc

    data = fh.read(8)
    fh.seek(0)
    if data[:6] == b"ARROW1":
        reader = ipc.open_file(fh)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    stream = ipc.open_stream(fh)
    return stream.schema, iter(stream)


def _cut(
    stream: Iterator[tuple[int, pa.RecordBatch]], ranges: Sequence[tuple[int, int]]
) -> Iterator[pa.RecordBatch]:
    """Slice a stream of (offset, batch) into exactly the requested row ranges."""
    pending = list(ranges)
    parts: list[pa.RecordBatch] = []
    for offset, batch in stream:
        end = offset + batch.num_rows
        while pending:
            start, stop = pending[0]
            lo, hi = max(start, offset), min(stop, end)
            if lo < hi:
                parts.append(batch.slice(lo - offset, hi - lo))
            if stop <= end:
                yield _concat(parts, batch.schema)
                parts = []
                pending.pop(0)
            else:
                break
        if not pending:
            return
    for _start, _stop in pending:
        raise InputError(f"input ended before row {_stop}; the file changed while being read")


def _concat(parts: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return pa.RecordBatch.from_pylist([], schema=schema)
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]
