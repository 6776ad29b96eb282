"""CSV input: Arrow's streaming reader, with ragged rows set aside as bad records.

A CSV file's rows are its records after the header, the ragged ones (a wrong
number of fields) included and blank lines not: planning counts them, a batch
is a range of them, and a ragged row is a bad record of the batch whose range
holds it, so every batch reads ``rows passed on + rows set aside`` rows. A
row's number, as in Arrow's own messages, counts the header as row 1: it is
the file's line number unless a blank line or a quoted line break comes first.

With a pipeline schema every column is read as bytes and cast by
``conform`` (with CSV's spellings of null and of booleans), so a value of the
wrong type or invalid UTF-8 costs its row, not the file. Without one, Arrow
infers the types from the first block, as it always has.
"""

from __future__ import annotations

import csv
import functools
import io
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from winnow.errors import InputError
from winnow.sources.conform import conform
from winnow.sources.jsonl import MAX_RAW, BadRecord

_DEFAULTS = pacsv.ConvertOptions()


@functools.cache
def _spelled(which: str) -> pa.Array:
    """Arrow CSV's default spellings of null, true or false, as an array.

    Built on first use: ``pa.array`` of a Python list imports pandas when it is
    installed (0.3-0.6 s), which no command should pay for at import.
    """
    return pa.array(getattr(_DEFAULTS, f"{which}_values"), pa.string())


_HEAD_CHUNK = 64 << 10


@dataclass
class _Ragged:
    index: int  # 0-based among the data rows
    record: BadRecord


class _Replay:
    """A stream whose first bytes were read already (for the header), served again first."""

    closed = False  # Arrow checks it before reading

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head = head
        self.rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return bytes(self.rest.read(size))
        if size is None or size < 0:
            data, self.head = self.head + self.rest.read(), b""
        else:
            data, self.head = self.head[:size], self.head[size:]
        return bytes(data)


class _Reader:
    """Arrow's CSV stream plus the ragged rows its parser reported so far, in order."""

    def __init__(self, url: str, fh: Any, as_bytes: bool) -> None:
        self.url = url
        self.ragged: deque[_Ragged] = deque()
        self.failure: BaseException | None = None
        head, self.names = _header(url, fh)
        types = {name: pa.binary() for name in self.names} if as_bytes else None
        try:
            self.stream = pacsv.open_csv(
                _Replay(head, fh),
                # One thread: Arrow numbers the rows it reports only then.
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=self._on_invalid
                ),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
        except pa.ArrowInvalid as exc:
            raise self._error(exc) from None

    def _on_invalid(self, row: Any) -> str:
        # An exception here would be printed by Arrow ("Exception ignored") and
        # lost: keep it, fail the read, and raise it from ``batches``.
        try:
            number = int(row.number)
            reason = (
                f"RaggedRow: expected {row.expected_columns} fields (the header's), "
                f"found {row.actual_columns}"
            )
            text = str(row.text or "")[:MAX_RAW]
            self.ragged.append(_Ragged(number - 2, BadRecord(self.url, number, reason, text)))
        except Exception as exc:
            self.failure = exc
            return "error"
        return "skip"

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.stream
        except pa.ArrowInvalid as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> InputError:
        cause = self.failure or exc
        fix = (
            "declare the column's type in the pipeline's schema, so that values of "
            "another type are set aside as bad records"
            if "conversion error" in str(exc)
            else "fix or remove the file, or leave it out of --input"
        )
        return InputError(
            f"input {self.url!r} is not a readable csv file ({type(cause).__name__}: "
            f"{cause}); {fix}"
        )


def _header(url: str, fh: Any) -> tuple[bytes, list[str]]:
    """Read a CSV file's header line from ``fh``.

    Returns:
        The bytes read from the start of ``fh`` (through the header line),
        and the column names the header gives, as Arrow reads them (a UTF-8
        BOM dropped).
    """
    head = b""
    while b"\n" not in head.lstrip(b"\r\n"):  # Arrow skips blank lines before the header
        data = fh.read(_HEAD_CHUNK)
        if not data:
            break
        head += data
    line = head.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not line.strip():
        raise InputError(
            f"input {url!r} is an empty CSV file: it has no header line naming its "
            "columns; add the header (and rows), or leave the file out of --input"
        )
    try:
        names = pacsv.read_csv(io.BytesIO(line + b"\n")).schema.names
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"input {url!r}: its CSV header line cannot be read ({exc}); fix its first line"
        ) from None
    return head, list(names)


def columns(url: str, fh: Any) -> pa.Schema:
    """The columns a CSV file's header names, each as text."""
    return pa.schema([(name, pa.string()) for name in _header(url, fh)[1]])


def count_rows(url: str, fh: Any) -> tuple[int, pa.Schema]:
    """Rows of a CSV stream (ragged ones included) and its header's columns."""
    reader = _Reader(url, fh, as_bytes=True)  # bytes: no value can fail to convert
    rows = sum(batch.num_rows for batch in reader.batches())
    found = pa.schema([(name, pa.string()) for name in reader.names])
    return rows + len(reader.ragged), found


def read(
    url: str, fh: Any, ranges: Sequence[tuple[int, int]], schema: pa.Schema | None
) -> Iterator[tuple[pa.RecordBatch, list[BadRecord]]]:
    """Yield one batch and its bad records per ``(start, stop)`` range, in order."""
    reader = _Reader(url, fh, as_bytes=schema is not None)
    for parts, bad in _by_range(url, _records(reader), ranges):
        batch = _concat([part for _, part in parts], reader)
        if schema is not None:
            numbers = [first + 2 + i for first, part in parts for i in range(part.num_rows)]
            batch, wrong = conform(batch, schema, url, numbers, cast=cast, raw=_raw)
            bad = sorted(bad + wrong, key=lambda b: b.row)
        yield batch, bad


def _records(reader: _Reader) -> Iterator[tuple[int, pa.RecordBatch | BadRecord]]:
    """Rows in file order: runs of good rows and single ragged ones, by 0-based index.

    Arrow reports a ragged row while parsing its block, before it yields that
    block's good rows: so when a batch arrives, every ragged row before its
    last row is known, and its rows fill the indices between them.
    """
    index = 0
    for batch in reader.batches():
        pos = 0
        while True:
            while reader.ragged and reader.ragged[0].index <= index:
                yield index, _next_ragged(reader, index)
                index += 1
            if pos >= batch.num_rows:
                break
            n = batch.num_rows - pos
            if reader.ragged:
                n = min(n, reader.ragged[0].index - index)
            yield index, batch.slice(pos, n)
            pos += n
            index += n
    while reader.ragged:
        yield index, _next_ragged(reader, index)
        index += 1


def _next_ragged(reader: _Reader, index: int) -> BadRecord:
    ragged = reader.ragged.popleft()
    if ragged.index != index:  # Arrow numbered its rows otherwise than we count them
        raise InputError(
            f"input {reader.url!r}: CSV row {ragged.record.row} could not be placed "
            f"(expected row {index + 2}); report this with the file"
        )
    return ragged.record


def _by_range(
    url: str,
    records: Iterator[tuple[int, pa.RecordBatch | BadRecord]],
    ranges: Sequence[tuple[int, int]],
) -> Iterator[tuple[list[tuple[int, pa.RecordBatch]], list[BadRecord]]]:
    """Group rows into the requested ranges: (good runs by first index, ragged rows)."""
    pending = sorted(ranges)
    parts: list[tuple[int, pa.RecordBatch]] = []
    bad: list[BadRecord] = []
    for index, item in records:
        end = index + (item.num_rows if isinstance(item, pa.RecordBatch) else 1)
        while pending:
            start, stop = pending[0]
            lo, hi = max(start, index), min(stop, end)
            if lo < hi:
                if isinstance(item, pa.RecordBatch):
                    parts.append((lo, item.slice(lo - index, hi - lo)))
                else:
                    bad.append(item)
            if stop > end:
                break
            yield parts, bad
            parts, bad = [], []
            pending.pop(0)
        if not pending:
            return
    if pending:
        raise InputError(
            f"input {url!r} ended before row {pending[0][1]}; it changed while being read"
        )


def _concat(parts: list[pa.RecordBatch], reader: _Reader) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return pa.RecordBatch.from_pylist([], schema=reader.stream.schema)
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def cast(column: pa.Array, to: pa.DataType) -> pa.Array:
    """CSV bytes as ``to``: Arrow's CSV spellings of null and booleans, UTF-8 checked."""
    if pa.types.is_binary(to) or pa.types.is_large_binary(to):
        return column.cast(to)
    text = column.cast(pa.string())  # fails on invalid UTF-8
    if pa.types.is_string(to) or pa.types.is_large_string(to):
        return text.cast(to)
    nulls = pc.is_in(text, value_set=_spelled("null"))
    if pa.types.is_boolean(to):
        true = pc.is_in(text, value_set=_spelled("true"))
        known = pc.or_(pc.or_(true, pc.is_in(text, value_set=_spelled("false"))), nulls)
        if not pc.all(known).as_py():
            value = text.filter(pc.invert(known))[0].as_py()
            raise pa.ArrowInvalid(f"Failed to parse string: {value!r} as a scalar of type bool")
        return pc.if_else(nulls, pa.scalar(None, pa.bool_()), true)
    return pc.if_else(nulls, pa.scalar(None, pa.string()), text).cast(to)


def _raw(batch: pa.RecordBatch, i: int) -> str:
    """A row read as bytes, written back as one CSV line."""
    values = [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))
        for v in batch.slice(i, 1).to_pylist()[0].values()
    ]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()[:MAX_RAW]
