"""JSON Lines input.

Lines are read in large chunks from any decompressor and parsed by Arrow;
malformed lines are set aside as bad records instead of failing their batch.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from winnow.errors import InputError

MAX_RAW = 4096
# Stands in for a torn tail, whose row is its TruncatedInput bad record: an
# empty line a file cannot hold (a real line ends with its newline).
TORN_PLACEHOLDER = b""


@dataclass
class BadRecord:
    """A row set aside: its file, 1-based row (line), why, and its raw text.

    ``blank``: a blank JSONL line, which holds no record. It is counted (rows
    are lines, so the batch's range includes it) but never quarantined.
    """

    file: str
    row: int
    error: str
    raw: str
    blank: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The record as quarantine stores it (``blank`` lines are never quarantined)."""
        return {"file": self.file, "row": self.row, "error": self.error, "raw": self.raw}


class TornStream(Exception):
    """A compressed stream ends before its end marker: the file was cut short."""


def chunks(fh: Any, size: int) -> Iterator[bytes]:
    """Read a stream to its end, yielding every readable byte before a tear.

    Raises:
        TornStream: after the last readable bytes, when a .gz/.zst stream is cut
            short (a copy interrupted mid-way).
    """
    read = getattr(fh, "read1", fh.read)  # read1: a tear loses no earlier data
    while True:
        try:
            data = read(size)
        except EOFError:
            raise TornStream() from None
        except Exception as exc:  # zstandard reports a torn frame as ZstdError
            if type(exc).__name__ == "ZstdError":
                raise TornStream() from None
            raise
        if not data:
            return
        yield data


def count_lines(fh: Any) -> int:
    """Rows of a JSONL stream: its lines, plus one for a torn tail (see ``read``)."""
    lines = 0
    last = b"\n"
    try:
        for chunk in chunks(fh, 8 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    except TornStream:
        return lines + 1
    return lines + (0 if last == b"\n" else 1)


def _lines(fh: Any, chunk: int = 4 << 20) -> Iterator[tuple[bytes, bool]]:
    """Lines of a binary stream, read in large chunks (works on any decompressor).

    Each comes with whether it is the torn tail of a stream cut short: what was
    left after its last complete line, possibly nothing, stands for the rows
    lost with the rest of the file.
    """
    rest = b""
    try:
        for data in chunks(fh, chunk):
            parts = (rest + data).split(b"\n")
            rest = parts.pop()
            for part in parts:
                yield part + b"\n", False
    except TornStream:
        yield rest, True
        return
    if rest:
        yield rest, False


def read(
    url: str, fh: Any, ranges: Sequence[tuple[int, int]], schema: pa.Schema | None
) -> Iterator[tuple[pa.RecordBatch, list[BadRecord]]]:
    """Read the JSONL lines at ``ranges`` (0-based line numbers, ascending) from ``fh``.

    A line that is not a record is returned as a ``BadRecord`` beside its batch;
    so is the cut-off last line of a compressed stream that ends without its
    end marker.

    Args:
        url: the file's URL, for messages and bad records.
        fh: the file, opened (and decompressed) for reading.
        ranges: ``[start, stop)`` line ranges, one batch each.
        schema: the schema to parse with; None infers it.

    Yields:
        Each range's batch and its bad records.

    Raises:
        InputError: the file ends before the last range (it changed since it was
            indexed).
    """
    pending = list(ranges)
    lines: list[bytes] = []
    torn: list[BadRecord] = []
    first_row = pending[0][0] if pending else 0
    for row, (raw, is_torn) in enumerate(_lines(fh)):
        if not pending:
            return
        start, stop = pending[0]
        if start <= row < stop:
            if not lines:
                first_row = row
            if is_torn:
                torn.append(_torn(url, row + 1, raw))
                raw = TORN_PLACEHOLDER  # parsed as nothing, numbering kept
            lines.append(raw)
        if row + 1 == stop:
            yield _with(_parse(url, lines, first_row, schema), torn)
            lines, torn = [], []
            pending.pop(0)
    if pending and lines:
        yield _with(_parse(url, lines, first_row, schema), torn)
        pending.pop(0)
    if pending:
        raise InputError(
            f"input {url!r} ended before line {pending[0][1]}; it changed while being read"
        )


def _torn(url: str, number: int, tail: bytes) -> BadRecord:
    return BadRecord(
        url,
        number,
        f"TruncatedInput: the compressed stream ends without its end marker, so lines from "
        f"{number} on are missing (the file was cut short, e.g. by an interrupted copy); "
        "copy it again and rerun",
        tail[:MAX_RAW].decode("utf-8", "replace"),
    )


def _with(
    parsed: tuple[pa.RecordBatch, list[BadRecord]], torn: list[BadRecord]
) -> tuple[pa.RecordBatch, list[BadRecord]]:
    batch, bad = parsed
    return batch, bad + torn  # the torn tail is the file's last row


def _parse(
    url: str, lines: list[bytes], first_row: int, schema: pa.Schema | None
) -> tuple[pa.RecordBatch, list[BadRecord]]:
    data = b"".join(lines)
    if not data.endswith(b"\n"):
        data += b"\n"
    try:
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(
                block_size=max(len(data) + 1, 1 << 20), use_threads=False
            ),
            parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            )
            if schema is not None
            else None,
        )
        if table.num_rows == sum(1 for ln in lines if ln.strip()) and not _suspect(table, schema):
            table.validate(full=True)  # Arrow's JSON reader does not check UTF-8; this does
            return _one_batch(table, schema), _blanks(url, lines, first_row)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        pass
    return _parse_slow(url, lines, first_row, schema)


def _parse_slow(
    url: str, lines: list[bytes], first_row: int, schema: pa.Schema | None
) -> tuple[pa.RecordBatch, list[BadRecord]]:
    """Line-by-line parse that sets bad records aside instead of failing the batch."""
    good: list[tuple[int, bytes, dict[str, Any]]] = []
    bad: list[BadRecord] = []
    for offset, line in enumerate(lines):
        number = first_row + offset + 1
        if not line.strip():
            if line != TORN_PLACEHOLDER:
                bad.append(_blank(url, number))
            continue
        try:
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            bad.append(_bad(url, number, exc, line))
            continue
        mismatch = _mismatch(value, schema) or _inexact(value, schema)
        if mismatch:
            bad.append(BadRecord(url, number, mismatch, _text(line)))
            continue
        good.append((number, line, value))
    try:
        return _to_batch([v for _, _, v in good], schema), bad
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        pass
    if schema is None:
        schema = _infer_schema([v for _, _, v in good])
    # Some record does not fit the schema: find which, one by one.
    kept = []
    for number, line, value in good:
        try:
            _to_batch([value], schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            bad.append(_bad(url, number, exc, line))
            continue
        kept.append(value)
    bad.sort(key=lambda b: b.row)
    return _to_batch(kept, schema), bad


def _suspect(table: pa.Table, schema: pa.Schema | None) -> bool:
    """Whether a row may not fit ``schema`` (see ``_mismatch``): only then look line by line.

    Arrow fills a field a record lacks with null, so such a row is one with
    a null in a non-nullable column, or nulls in every column.
    """
    if schema is None or table.num_rows == 0:
        return False
    if any(table.column(f.name).null_count for f in schema if not f.nullable):
        return True
    if min(column.null_count for column in table.columns) == 0:
        return False
    all_null = table.column(0).is_null()
    for column in table.columns[1:]:
        all_null = pc.and_(all_null, column.is_null())
    return bool(pc.any(all_null).as_py())


def _mismatch(value: dict[str, Any], schema: pa.Schema | None) -> str:
    """Why a record does not fit ``schema``, or '' when it fits.

    It shares no field with the schema, or lacks a non-nullable one. Its
    values' types are checked apart.
    """
    if schema is None:
        return ""
    if not any(name in value for name in schema.names):
        return (
            "SchemaMismatch: the record has none of the pipeline schema's fields "
            f"({', '.join(schema.names)}); fix the record or the pipeline's schema"
        )
    lacking = [f.name for f in schema if not f.nullable and value.get(f.name) is None]
    if lacking:
        return (
            f"SchemaMismatch: the record has no value for {', '.join(lacking)}, which the "
            "pipeline's schema declares non-nullable; fix the record or the schema"
        )
    return ""


def _inexact(value: dict[str, Any], schema: pa.Schema | None) -> str:
    """Why a record holds a number an integer column would truncate, or '' if none.

    Arrow's conversion from Python turns 12.5 into 12 without a word; its
    JSON reader refuses it, and so do we.
    """
    if schema is None:
        return ""
    for field in schema:
        v = value.get(field.name)
        if pa.types.is_integer(field.type) and isinstance(v, float):
            return (
                f"TypeMismatch: {field.name} = {v!r} is not an integer, and the pipeline's "
                f"schema declares it {field.type}; fix the record or the schema"
            )
    return ""


def _blanks(url: str, lines: list[bytes], first_row: int) -> list[BadRecord]:
    return [
        _blank(url, first_row + i + 1)
        for i, line in enumerate(lines)
        if not line.strip() and line != TORN_PLACEHOLDER
    ]


def _blank(url: str, number: int) -> BadRecord:
    return BadRecord(url, number, "BlankLine: holds no record", "", blank=True)


def _bad(url: str, number: int, exc: BaseException, line: bytes) -> BadRecord:
    return BadRecord(url, number, f"{type(exc).__name__}: {exc}"[:500], _text(line))


def _text(line: bytes) -> str:
    return line[:MAX_RAW].decode("utf-8", "replace").rstrip("\n")


def _to_batch(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.RecordBatch:
    if schema is None:
        return pa.RecordBatch.from_pylist(rows)
    return pa.RecordBatch.from_pylist(
        [{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema
    )


def _infer_schema(rows: list[dict[str, Any]]) -> pa.Schema:
    """Without a declared schema, each field takes the type most of its values have.

    A minority of values of another type (``"id": "seven"`` among integers)
    then become bad records instead of deciding the column's type.
    """
    votes: dict[str, Counter[pa.DataType]] = {}
    for row in rows:
        for name, value in row.items():
            counter = votes.setdefault(name, Counter())
            if value is None:
                continue
            try:
                counter[pa.array([value]).type] += 1
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                continue
    fields = []
    for name, counter in votes.items():
        kind = counter.most_common(1)[0][0] if counter else pa.null()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _one_batch(table: pa.Table, schema: pa.Schema | None) -> pa.RecordBatch:
    table = table.combine_chunks()
    batches = table.to_batches()
    if batches:
        return batches[0]
    return pa.RecordBatch.from_pylist([], schema=schema or table.schema)
