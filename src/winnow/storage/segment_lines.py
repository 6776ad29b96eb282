"""The lines of a checkpoint segment: read in pieces, decoded, each checked.

A segment is JSON lines, one checkpoint record each. These functions cut it
into pieces that end at a line end (a compacted 100,000-record segment is
never decoded whole), decode a piece (all its lines at once when none is
damaged), and name each damaged line with its number; and, for a merge of
segments (compaction), find which line of each key to keep in one read and
copy those lines in a second, holding no line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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


Pieces = Iterable[tuple[int, bytes]]  # a segment read in pieces (``pieces``, ``file_pieces``)


@dataclass
class Merge:
    """What merging segments keeps, found in a first read that holds no line.

    Attributes:
        segments: per segment read, in order: its path, its record count and
            the SHA-256 of its bytes (the second read must find the same).
        dropped: positions (records numbered over all segments, in order) of
            the lines a newer record of the same key supersedes.
        kept: how many lines the merge keeps: one per key.
    """

    segments: list[tuple[str, int, str]] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    kept: int = 0


class SegmentsChanged(ValueError):
    """The segments read again for a merge are not the ones its first read surveyed."""


def survey(segments: Iterable[tuple[str, Pieces]]) -> Merge | None:
    """Which line of each key a merge keeps; None when a segment has a damaged line.

    The newest record of a key is the one with the latest ``ts`` (of equal
    ones, the later line), as a load decides. Only keys and positions are
    held (~0.3 KB a record, not the ~1.3 KB of its line and its key).
    """
    newest: dict[str, tuple[float, int]] = {}
    merge, position = Merge(), 0
    for path, pieces in segments:
        sha, count = hashlib.sha256(), 0
        for _, piece in pieces:
            sha.update(piece)
            parsed, bad = parse_segment(piece)
            if bad:
                return None
            for rec, _ in parsed:
                prev = newest.get(rec["key"])
                if prev is None or rec["ts"] >= prev[0]:
                    if prev is not None:
                        merge.dropped.add(prev[1])
                    newest[rec["key"]] = (rec["ts"], position)
                else:
                    merge.dropped.add(position)
                position += 1
                count += 1
        merge.segments.append((path, count, sha.hexdigest()))
    merge.kept = len(newest)
    return merge


def merged_lines(segments: Iterable[tuple[str, Pieces]], merge: Merge) -> Iterator[bytes]:
    """The lines ``merge`` keeps, as written and each with its newline, from a second read.

    A segment's records are its first non-blank lines (past them only a torn
    tail, which is no record); the survey found no damaged line.

    Raises:
        SegmentsChanged: a segment is missing, extra or not the same bytes.
    """
    expected, position, kept = iter(merge.segments), 0, 0
    for path, pieces in segments:
        surveyed = next(expected, None)
        if surveyed is None or surveyed[0] != path:
            raise SegmentsChanged(f"{path}: not the segment surveyed ({surveyed})")
        sha, left = hashlib.sha256(), surveyed[1]
        for _, piece in pieces:
            sha.update(piece)
            for line in piece.split(b"\n"):
                if left and line.strip():
                    left -= 1
                    if position not in merge.dropped:
                        kept += 1
                        yield line + b"\n"
                    position += 1
        if left or sha.hexdigest() != surveyed[2]:
            raise SegmentsChanged(f"{path}: changed since it was surveyed")
    if next(expected, None) is not None or kept != merge.kept:
        raise SegmentsChanged("a segment surveyed was not read again")


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    """Records as segment lines: compact JSON, one a line."""
    return "".join(
        json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records
    ).encode()
