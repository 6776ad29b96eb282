"""The lines of a checkpoint segment: read in pieces, decoded, each checked.

A segment is JSON lines, one checkpoint record each. These functions cut it
into pieces that end at a line end (a compacted 100,000-record segment is
never decoded whole), decode a piece (all its lines at once when none is
damaged), and name each damaged line with its number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from winnow.records import CHECKPOINT_STATUSES

PIECE_BYTES = 4 << 20  # a segment is decoded this much at a time


def pieces(data: bytes) -> Iterator[tuple[int, bytes]]:
    """A segment in pieces of about ``PIECE_BYTES`` that end at a line end.

    Each with how many lines come before it. Decoding a compacted
    100,000-record segment whole would hold four copies of its 100 MB at once
    (lines, joined, decoded text, the read itself); a piece at a time, one.
    """
    start = before = 0
    while start < len(data):
        end = data.find(b"\n", start + PIECE_BYTES)
        end = len(data) if end < 0 else end + 1
        piece = data[start:end]  # the segment itself, not a copy, when it is one piece
        yield before, piece
        before += piece.count(b"\n")
        start = end


def file_pieces(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``pieces`` of an open file, read a piece at a time."""
    before = 0
    rest = b""
    while True:
        chunk = fh.read(PIECE_BYTES)
        if not chunk:
            break
        data = rest + chunk
        end = data.rfind(b"\n") + 1
        piece, rest = data[:end], data[end:]
        if piece:
            yield before, piece
            before += piece.count(b"\n")
    if rest:
        yield before, rest  # a torn last line, without its newline


Line = tuple[dict[str, Any], bytes]  # a record and its line in the segment, as written


def parse_segment(data: bytes) -> tuple[list[Line], list[tuple[int, str]]]:
    """A segment's records with their lines, and ``(line number, reason)`` for each bad line."""
    whole = _parse_whole(data)
    if whole is not None:
        return whole, []
    records: list[Line] = []
    bad: list[tuple[int, str]] = []
    for number, line, rec, reason in scan(data):
        if rec is None:
            bad.append((number, reason))
        else:
            records.append((rec, line))
    return records, bad


def _parse_whole(data: bytes) -> list[Line] | None:
    """Every line of an undamaged segment decoded at once; None to scan it line by line.

    One decode of the lines as a JSON array costs less than one decode per
    line, and shares one copy of each field name among the segment's records
    (a third of their memory). It stands for the line scan only when it gives
    the same answer: as many values as lines, each value a checkpoint record,
    each line one object (``{`` to ``}``) with as many closing brackets as
    opening ones. The last test keeps two halves of a torn-apart record from
    joining into one (a raw newline cannot be inside a JSON string, so each
    line starts where the one before ended); strings that hold brackets can
    fail it, and then cost only the line scan. A damaged line, or a torn tail
    that does not parse, fails the decode or a test, and the scan finds it.
    """
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not all(map(_one_object, lines)):
        return None
    try:
        values = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:  # UnicodeDecodeError too
        return None
    if len(values) != len(lines) or not all(map(_is_record, values)):
        return None
    return list(zip(values, lines, strict=True))


def _one_object(line: bytes) -> bool:
    """Whether a line looks like one whole JSON object: braced, its brackets balanced."""
    line = line.strip()
    return (
        line[:1] == b"{"
        and line[-1:] == b"}"
        and line.count(b"{") == line.count(b"}")
        and line.count(b"[") == line.count(b"]")
    )


def _is_record(value: Any) -> bool:
    """``_checked``'s test without its reasons: the common case, at a fraction of its cost."""
    return (
        type(value) is dict
        and type(value.get("key")) is str
        and value.get("status") in CHECKPOINT_STATUSES
        and type(value.get("ts")) in (int, float)
    )


def scan(data: bytes) -> Iterator[tuple[int, bytes, dict[str, Any] | None, str]]:
    """Each non-blank line of a segment: number, bytes, record (None if damaged), reason.

    A torn last line (a write cut short) is left out without a word: every
    complete record ends with a newline, and no proper prefix of a JSON
    object parses, so a torn line is exactly an unparseable unterminated tail.
    """
    *lines, tail = data.split(b"\n")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if tail.strip():
        numbered.append((len(lines) + 1, tail))
    for number, line in numbered:
        try:
            value = json.loads(line)
        except ValueError as exc:  # UnicodeDecodeError too
            if number <= len(lines):
                yield number, line, None, f"not JSON ({type(exc).__name__}: {str(exc)[:80]})"
            continue
        yield number, line, *_checked(value)


def _checked(value: Any) -> tuple[dict[str, Any] | None, str]:
    """``value`` if it is a checkpoint record, else None and why it is not one."""
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not a checkpoint record"
    missing = [k for k in ("key", "status", "ts") if k not in value]
    if missing:
        return None, f"a checkpoint record without {', '.join(missing)}"
    if not isinstance(value["key"], str) or value["status"] not in CHECKPOINT_STATUSES:
        return None, (
            f"a checkpoint record with key {value['key']!r} and status {value['status']!r}"
        )
    if type(value["ts"]) not in (int, float):
        return None, f"a checkpoint record with timestamp {value['ts']!r}"
    return value, ""


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    """Records as segment lines: compact JSON, one a line."""
    return "".join(
        json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records
    ).encode()
