"""Checkpoints: one record per (stage, batch key), stored as segment files.

Designed for object storage: a run appends records to an in-memory buffer and
writes each flush as a new immutable segment object under
``stages/<stage>/segments/``. Deciding skip/run for a stage costs one listing
plus one read per segment, not one request per batch. At the end of a run the
segments of a stage are compacted into one. The latest record per key wins.

A checkpoint is a cache of verified work, so a damaged line costs only the
batch it described: it is skipped, reported as a :class:`Damage` naming file
and line, and that batch is recomputed by the next run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import posixpath
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from winnow.records import CHECKPOINT_STATUSES, CheckpointRecord
from winnow.storage.fs import is_local, join, refresh, to_url, write_atomic


@dataclass(frozen=True)
class Damage:
    """A part of a state file that could not be read, and was skipped.

    Attributes:
        path: the file's path on its filesystem (what a repair rewrites).
        url: the same file as a URL, for messages.
        line: 1-based line number; 0 when the whole file is unreadable.
        reason: what is wrong with it.
    """

    path: str
    url: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.url}:{self.line}" if self.line else self.url
        return f"{where}: {self.reason}"


@dataclass
class StageCheckpoints:
    """The latest checkpoint record of every batch key of one stage.

    ``damage`` lists the segment lines that were skipped because they are not
    checkpoint records; their batches have no record here, so they rerun.
    """

    stage: str
    records: dict[str, dict[str, Any]]
    segments: list[str]
    damage: list[Damage] = field(default_factory=list)


class CheckpointStore:
    """Checkpoint segments under ``<state>/stages/<stage>/segments/``."""

    def __init__(self, fs: Any, root: str, job_id: str, flush_every: int = 256) -> None:
        self.fs = fs
        self.root = root
        self.job_id = job_id
        self.flush_every = flush_every
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def stage_dir(self, stage: str) -> str:
        """The folder of ``stage``'s checkpoint segments."""
        return join(self.root, "stages", stage, "segments")

    def load(self, stage: str, fields: Sequence[str] | None = None) -> StageCheckpoints:
        """Read every segment of a stage; the newest record per key wins.

        Args:
            stage: the stage's name.
            fields: keep only these fields of each record (those it has, and
                always its ``key`` and ``ts``, which say which record is newest), and
                hold only one piece of a segment's whole records at a time:
                planning 100,000 batches keeps what it decides with
                (``records.SUMMARY_FIELDS``), not every record's timings and
                source. Every field when None.
        """
        paths = self._segment_paths(stage)
        records: dict[str, dict[str, Any]] = {}
        damage: list[Damage] = []
        shared: dict[str, str] = {}
        if fields is not None:
            fields = ("key", "ts", *(f for f in fields if f not in ("key", "ts")))
        with gc_paused():
            for path, parsed, bad in self._parsed(paths):
                damage.extend(Damage(path, to_url(self.fs, path), n, why) for n, why in bad)
                for rec, _ in parsed:
                    prev = records.get(rec["key"])
                    if prev is None or rec["ts"] >= prev["ts"]:
                        if fields is not None:
                            rec = _project(rec, fields, shared)
                        records[rec["key"]] = rec
        return StageCheckpoints(stage=stage, records=records, segments=paths, damage=damage)

    def _segment_paths(self, stage: str) -> list[str]:
        """The stage's segments, freshly listed, oldest first."""
        directory = self.stage_dir(stage)
        # s3fs keeps a listing cached by an earlier call and answers the size lookup
        # of each `cat` from it: a segment another process wrote since would read as
        # missing and be dropped. Dropping the entry makes `find` cache a fresh one.
        refresh(self.fs, directory)
        try:
            return sorted(p for p in self.fs.find(directory) if p.endswith(".jsonl"))
        except FileNotFoundError:
            return []

    def _parsed(self, paths: list[str]) -> Iterator[tuple[str, list[Line], list[tuple[int, str]]]]:
        """Each segment read piece by piece: its path, records with lines, damage.

        On a local disk each segment is read a piece at a time (a compacted
        100,000-record segment is never held whole); elsewhere all of a
        stage's segments come in one batched read (one request per segment).
        """
        for path, pieces in self._read(paths):
            for before, piece in pieces:
                parsed, bad = _parse_segment(piece)
                yield path, parsed, [(before + n, why) for n, why in bad]

    def _read(self, paths: list[str]) -> Iterator[tuple[str, Iterator[tuple[int, bytes]]]]:
        """Each segment that still exists, as its pieces (see ``_pieces``)."""
        if is_local(self.fs):
            for path in paths:
                try:
                    fh = open(path, "rb")  # noqa: SIM115 (closed once its pieces are read)
                except FileNotFoundError:
                    continue  # removed by a concurrent compaction; its records live on
                with fh:
                    yield path, _file_pieces(fh)
            return
        contents = self.fs.cat(paths, on_error="omit") if paths else {}
        for path in paths:
            data = contents.pop(path, None)
            if data is not None:  # None: removed by a concurrent compaction
                yield path, _pieces(data)

    def append(self, record: CheckpointRecord | dict[str, Any]) -> dict[str, Any]:
        """Buffer one record; flush the stage's buffer when it is full.

        Returns the record as it is written (with its ``ts``). A dict is
        buffered as it is (``verify`` and ``invalidate`` re-append a record
        they read, with a new status).
        """
        if isinstance(record, CheckpointRecord):
            record = record.to_dict()
        record.setdefault("ts", time.time())
        with self._lock:
            buf = self._buffers.setdefault(record["stage"], [])
            buf.append(record)
            full = len(buf) >= self.flush_every
        if full:
            self.flush(record["stage"])
        return record

    def flush(self, stage: str | None = None) -> int:
        """Write buffered records as new segments; return how many were written."""
        stages = [stage] if stage else list(self._buffers)
        written = 0
        for name in stages:
            with self._lock:
                records = self._buffers.pop(name, [])
                self._seq += 1
                seq = self._seq
            if not records:
                continue
            path = join(
                self.stage_dir(name),
                f"{int(time.time() * 1000):013d}-{self.job_id}-{seq:06d}.jsonl",
            )
            write_atomic(self.fs, path, _jsonl(records))
            written += len(records)
        return written

    def compact(self, stage: str, min_segments: int = 8) -> bool:
        """Merge a stage's segments into one when there are many.

        The merged segment is written before any source is removed, so a
        concurrent reader sees every record at every moment. A stage with
        damaged lines is left as it is: merging would delete them unseen, and
        ``repair`` keeps a backup first.
        """
        paths = self._segment_paths(stage)
        if len(paths) < min_segments:
            return False
        # The newest line of each key, as it was written: no record is encoded again,
        # and only one segment's decoded records are held at a time.
        newest: dict[str, tuple[float, bytes]] = {}
        with gc_paused():
            for _, parsed, bad in self._parsed(paths):
                if bad:
                    return False
                for rec, line in parsed:
                    prev = newest.get(rec["key"])
                    if prev is None or rec["ts"] >= prev[0]:
                        newest[rec["key"]] = (rec["ts"], line)
        path = join(
            self.stage_dir(stage),
            f"{int(time.time() * 1000):013d}-compact-{uuid.uuid4().hex[:8]}.jsonl",
        )
        write_atomic(self.fs, path, (line + b"\n" for _, line in newest.values()))
        self.fs.rm([p for p in paths if p != path])
        return True

    def repair(self, path: str, backup: str) -> int:
        """Rewrite the segment at ``path`` without its damaged lines; return how many.

        The segment is read again (a compaction may have replaced it since it
        was found damaged) and its bytes are copied to ``backup`` before the
        rewrite, which keeps every good record line as it was. A segment left
        with no record is removed. A torn last line goes too: it never was a
        record.
        """
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return 0
        lines = list(_scan(data))
        good = [line + b"\n" for _, line, rec, _ in lines if rec is not None]
        bad = len(lines) - len(good)
        if not bad:
            return 0
        write_atomic(self.fs, backup, data)
        if good:
            write_atomic(self.fs, path, b"".join(good))
        else:
            self.fs.rm_file(path)
        return bad

    def stages(self) -> list[str]:
        """The stages with checkpoints in this state, sorted by name (freshly listed)."""
        base = join(self.root, "stages")
        # Another process may have added a stage since this filesystem instance last
        # listed here, and s3fs would answer from its listing cache.
        refresh(self.fs, base)
        try:
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False))
        except FileNotFoundError:
            return []


def _project(rec: dict[str, Any], fields: Sequence[str], shared: dict[str, str]) -> dict[str, Any]:
    """``rec``'s ``fields``; its status and its artifact's format and schema from ``shared``.

    Every record of a stage spells these alike (one schema per stage
    version), and the JSON decoder makes a new string of each: 100,000 of
    them cost 20 MB per stage; ``shared`` keeps one of each.
    """
    out = {k: rec[k] for k in fields if k in rec}
    if type(status := out.get("status")) is str:
        out["status"] = shared.setdefault(status, status)
    art = out.get("artifact")
    if type(art) is dict:
        for name in ("format", "schema_fp"):
            if type(value := art.get(name)) is str:
                art[name] = shared.setdefault(value, value)
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many acyclic objects.

    Decoding 100,000 records allocates millions of dicts and strings, none in
    a reference cycle; each allocation burst would trigger collections that
    walk every object made so far (a third of a stage's load time at that
    size). Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


PIECE_BYTES = 4 << 20  # a segment is decoded this much at a time


def _pieces(data: bytes) -> Iterator[tuple[int, bytes]]:
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


def _file_pieces(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``_pieces`` of an open file, read a piece at a time."""
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


def _parse_segment(data: bytes) -> tuple[list[Line], list[tuple[int, str]]]:
    """A segment's records with their lines, and ``(line number, reason)`` for each bad line."""
    whole = _parse_whole(data)
    if whole is not None:
        return whole, []
    records: list[Line] = []
    bad: list[tuple[int, str]] = []
    for number, line, rec, reason in _scan(data):
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


def _scan(data: bytes) -> Iterator[tuple[int, bytes, dict[str, Any] | None, str]]:
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


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records
    ).encode()
