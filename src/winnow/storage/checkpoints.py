"""Checkpoints: one record per (stage, batch key), stored as segment files.

Designed for object storage: a run appends records to an in-memory buffer and
writes each flush as a new immutable segment object under
``stages/<stage>/segments/``. Deciding skip/run for a stage costs one listing
plus one read per segment, not one request per batch. At the end of a run the
segments of a stage are compacted into one, with a columnar index of its
records' summaries beside it (``checkpoint_index``) that a planning load reads,
verified, instead of decoding the JSON. The latest record per key wins.

A checkpoint is a cache of verified work, so a damaged line costs only the
batch it described: it is skipped, reported as a :class:`Damage` naming file
and line, and that batch is recomputed by the next run.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from winnow.records import SUMMARY_FIELDS, CheckpointRecord
from winnow.storage import checkpoint_index, segment_lines
from winnow.storage.fs import is_local, join, refresh, to_url, write_atomic, write_streamed


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

    def load(self, stage: str, summary: bool = False) -> StageCheckpoints:
        """Read every segment of a stage; the newest record per key wins.

        Args:
            stage: the stage's name.
            summary: keep only each record's ``records.SUMMARY_FIELDS`` (what
                planning decides with, not its timings and source), reading a
                compacted segment from its verified columnar index when it has
                one (``checkpoint_index``) instead of decoding its JSON.
        """
        paths, index_files = self._listing(stage)
        indexes = _indexes_of(paths, index_files) if summary else {}
        records: dict[str, dict[str, Any]] = {}
        damage: list[Damage] = []
        with gc_paused():
            for path, parsed, bad, summarized in self._parsed(paths, indexes):
                damage.extend(Damage(path, to_url(self.fs, path), n, why) for n, why in bad)
                for rec, _ in parsed:
                    prev = records.get(rec["key"])
                    if prev is None or rec["ts"] >= prev["ts"]:
                        if summary and not summarized:
                            rec = {k: rec[k] for k in SUMMARY_FIELDS if k in rec}
                        records[rec["key"]] = rec
        return StageCheckpoints(stage=stage, records=records, segments=paths, damage=damage)

    def _segment_paths(self, stage: str) -> list[str]:
        """The stage's segments, freshly listed, oldest first."""
        return self._listing(stage)[0]

    def _listing(self, stage: str) -> tuple[list[str], list[str]]:
        """The stage's segments (oldest first) and index files, in one fresh listing."""
        directory = posixpath.dirname(self.stage_dir(stage))
        # s3fs keeps a listing cached by an earlier call and answers the size lookup
        # of each `cat` from it: a segment another process wrote since would read as
        # missing and be dropped. Dropping the entries (each folder's and their
        # parents') makes `find` cache fresh ones.
        refresh(self.fs, self.stage_dir(stage))
        refresh(self.fs, join(directory, checkpoint_index.FOLDER))
        try:
            found = self.fs.find(directory)
        except FileNotFoundError:
            return [], []
        segments = sorted(p for p in found if p.endswith(".jsonl") and "/segments/" in p)
        return segments, [p for p in found if checkpoint_index.indexed_segment(p)]

    def _parsed(
        self, paths: list[str], indexes: dict[str, tuple[str, str]] | None = None
    ) -> Iterator[tuple[str, list[segment_lines.Line], list[tuple[int, str]], bool]]:
        """Each segment read piece by piece: its path, records with lines, damage.

        And whether the records are summaries, read from the segment's index
        (``indexes``: segment path to index path and digest), their lines empty.
        On a local disk each segment is read a piece at a time (a compacted
        100,000-record segment is never held whole); elsewhere all of a
        stage's segments come in one batched read (one request per segment).
        """
        for path, pieces, summaries in self._read(paths, indexes or {}):
            if summaries is not None:
                yield path, [(rec, b"") for rec in summaries], [], True
                continue
            for before, piece in pieces:
                parsed, bad = segment_lines.parse_segment(piece)
                yield path, parsed, [(before + n, why) for n, why in bad], False

    def _pieces(self, paths: list[str]) -> Iterator[tuple[str, segment_lines.Pieces]]:
        """Each segment that still exists, in pieces (its JSON lines; no index)."""
        for path, pieces, _ in self._read(paths, {}):
            yield path, pieces

    def _read(
        self, paths: list[str], indexes: dict[str, tuple[str, str]]
    ) -> Iterator[tuple[str, Iterator[tuple[int, bytes]], list[dict[str, Any]] | None]]:
        """Each segment that still exists: its pieces (``pieces``), or its index's summaries."""
        if is_local(self.fs):
            for path in paths:
                summaries = _local_index(path, indexes[path]) if path in indexes else None
                if summaries is not None:
                    yield path, iter(()), summaries
                    continue
                try:
                    fh = open(path, "rb")  # noqa: SIM115 (closed once its pieces are read)
                except FileNotFoundError:
                    continue  # removed by a concurrent compaction; its records live on
                with fh:
                    yield path, segment_lines.file_pieces(fh), None
            return
        wanted = [*paths, *(indexes[p][0] for p in paths if p in indexes)]
        contents = self.fs.cat(wanted, on_error="omit") if paths else {}
        for path in paths:
            data = contents.pop(path, None)
            if data is None:  # removed by a concurrent compaction
                continue
            summaries = None
            if path in indexes and (index := contents.pop(indexes[path][0], None)) is not None:
                name, digest = posixpath.basename(path), indexes[path][1]
                sha = hashlib.sha256(data).hexdigest()
                summaries = checkpoint_index.records(index, digest, name, sha, len(data))
            yield path, segment_lines.pieces(data), summaries

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
        """Write buffered records as new segments, each with its index; return how many."""
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
            data = segment_lines.jsonl(records)
            write_atomic(self.fs, path, data)
            written += len(records)
            # Indexed from the start: a run killed before it compacts leaves segments a
            # planning load still reads from their indexes, not by decoding JSON.
            sha = hashlib.sha256(data).hexdigest()
            self._write_index(path, data.split(b"\n")[:-1], len(records), sha, len(data))
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
        # Two reads (on an object store, two GETs a segment): the first finds each key's
        # newest line and holds only keys and positions; the second copies those lines
        # as they were written (no record encoded again) into the merged segment, which
        # is streamed out (in parts to an object store) and indexed from a read-back.
        # Holding the lines set a 100,000-batch run's driver peak: 492 MiB, now 374 (local).
        with gc_paused():
            merge = segment_lines.survey(self._pieces(paths))
        if merge is None:
            return False
        path = join(
            self.stage_dir(stage),
            f"{int(time.time() * 1000):013d}-compact-{uuid.uuid4().hex[:8]}.jsonl",
        )
        sha, size = hashlib.sha256(), [0]

        def chunks() -> Iterator[bytes]:
            for line in segment_lines.merged_lines(self._pieces(paths), merge):
                sha.update(line)
                size[0] += len(line)
                yield line

        try:
            write_streamed(self.fs, path, chunks())
        except segment_lines.SegmentsChanged:  # a concurrent compaction or repair: theirs stands
            return False
        self._write_index(path, None, merge.kept, sha.hexdigest(), size[0])
        self.fs.rm([p for p in paths if p != path])
        name = posixpath.basename(path)
        stale = [
            p
            for p in self._listing(stage)[1]
            if (checkpoint_index.indexed_segment(p) or ("",))[0] != name
        ]
        if stale:  # indexes of the segments just merged
            self.fs.rm(stale)
        return True

    def _write_index(
        self, path: str, lines: list[bytes] | None, count: int, sha256: str, size: int
    ) -> None:
        """Write the columnar index of the segment just written at ``path`` (best effort).

        ``lines``: its lines (a flush has them), or None to read it back a piece at a time.
        """
        name = posixpath.basename(path)
        try:
            if lines is None and is_local(self.fs):
                checkpoint_index.write_local(path, count, sha256, size)
                return
            if lines is None:
                with self.fs.open(path, "rb", block_size=segment_lines.PIECE_BYTES) as fh:
                    read = (
                        line
                        for _, piece in segment_lines.file_pieces(fh)
                        for line in piece.split(b"\n")
                        if line
                    )
                    data = checkpoint_index.build(read, count, name, sha256, size)
            else:
                data = checkpoint_index.build(lines, count, name, sha256, size)
            target = checkpoint_index.index_path(path, checkpoint_index.digest(data))
            write_atomic(self.fs, target, data, durable=False)  # verified when read
        except Exception:  # an optimisation: the segment is whole without its index
            return

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
        lines = list(segment_lines.scan(data))
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


def _indexes_of(paths: list[str], index_files: list[str]) -> dict[str, tuple[str, str]]:
    """Per segment path, the index file named for it and the digest that name holds."""
    by_name = {posixpath.basename(p): p for p in paths}
    out = {}
    for index in sorted(index_files):
        named = checkpoint_index.indexed_segment(index)
        if named is not None and named[0] in by_name:
            out[by_name[named[0]]] = (index, named[1])
    return out


def _local_index(path: str, index: tuple[str, str]) -> list[dict[str, Any]] | None:
    """A local segment's summaries from its index, once both are read and hashed; else None."""
    sha, size = hashlib.sha256(), 0
    try:
        with open(index[0], "rb") as fh:
            data = fh.read()
        with open(path, "rb") as fh:
            while chunk := fh.read(segment_lines.PIECE_BYTES):
                sha.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return checkpoint_index.records(data, index[1], posixpath.basename(path), sha.hexdigest(), size)


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
