"""Reading source batches, the same in a reader actor and in the driver.

A read stream keeps a file open between batches; a batch that fails to read
fails alone. What reading a batch found (rows, bad records, their quarantine
artifact) is its ``SourceMeta``. Nothing here imports Ray: the reader actor
(``actors.SourceReader``) and the local executor both run this code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from winnow import sources
from winnow.plan import BatchPlan, Plan
from winnow.records import SourceMeta
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.formats import serialize


def _quarantine(store: ArtifactStore, bad: list[sources.BadRecord]) -> dict[str, Any] | None:
    if not bad:
        return None
    batch = pa.RecordBatch.from_pylist([b.to_dict() for b in bad])
    ref = store.put_bytes(serialize(batch, "jsonl"), "jsonl", expected_records=len(bad))
    errors: dict[str, int] = {}
    for b in bad:
        kind = b.error.split(":", 1)[0]
        errors[kind] = errors.get(kind, 0) + 1
    return {"count": len(bad), "artifact": ref.to_dict(), "errors": errors}


def source_meta(
    store: ArtifactStore, batch: pa.RecordBatch, bad: list[sources.BadRecord], on_bad_record: str
) -> SourceMeta:
    """The small record about one source batch: rows read, bad ones, their quarantine.

    Blank JSONL lines count as rows read and are reported apart: they hold no
    record, so they are neither bad nor quarantined.
    """
    blank = sum(1 for b in bad if b.blank)
    bad = [b for b in bad if not b.blank]
    if bad and on_bad_record == "fail":
        first = bad[0]
        raise ValueError(
            f"bad record at {first.file} row {first.row}: {first.error} "
            "(profile on_bad_record = 'fail'; set 'quarantine' or 'skip' to keep going)"
        )
    quarantine = _quarantine(store, bad) if on_bad_record == "quarantine" else None
    rows = batch.num_rows + len(bad) + blank
    return SourceMeta(rows=rows, bad=len(bad), blank=blank, quarantine=quarantine)


@dataclass
class _Stream:
    file: sources.SourceFile
    ranges: list[tuple[int, int]]
    batches: Iterator[tuple[pa.RecordBatch, list[sources.BadRecord]]]
    position: int = 0


class SourceStreams:
    """Streams source files; keeps open streams between calls."""

    def __init__(
        self,
        store: ArtifactStore,
        schema: pa.Schema | None,
        on_bad_record: str,
        storage_options: dict[str, Any],
    ) -> None:
        self.store = store
        self.schema = schema
        self.on_bad_record = on_bad_record
        self.storage_options = storage_options
        self.streams: dict[str, _Stream] = {}

    def open(self, handle: str, file: sources.SourceFile, ranges: list[tuple[int, int]]) -> None:
        """Open stream ``handle``: the batches of ``file`` at ``ranges``, read in order."""
        ranges = sorted(ranges)
        self.streams[handle] = _Stream(file, ranges, self._read(file, ranges))

    def next(self, handle: str) -> tuple[SourceMeta, pa.RecordBatch]:
        """The next batch of an open stream and a small record about it.

        A batch that fails to read fails alone: the stream reopens after it.
        """
        stream = self.streams[handle]
        if stream.position >= len(stream.ranges):
            del self.streams[handle]
            raise RuntimeError(f"stream {handle} is exhausted")
        stream.position += 1
        try:
            batch, bad = next(stream.batches)
        except Exception:
            rest = stream.ranges[stream.position :]
            stream.batches = self._read(stream.file, rest) if rest else iter(())
            raise
        if stream.position == len(stream.ranges):
            del self.streams[handle]
        return self._meta(batch, bad), batch

    def _read(
        self, file: sources.SourceFile, ranges: list[tuple[int, int]]
    ) -> Iterator[tuple[pa.RecordBatch, list[sources.BadRecord]]]:
        return sources.read(file, ranges, self.schema, self.storage_options)

    def read_one(
        self, file: sources.SourceFile, start: int, stop: int
    ) -> tuple[SourceMeta, pa.RecordBatch]:
        """Read one range on its own (used when a batch is retried)."""
        batch, bad = next(sources.read(file, [(start, stop)], self.schema, self.storage_options))
        return self._meta(batch, bad), batch

    def close(self, handle: str) -> None:
        """Forget stream ``handle`` (no error if it is already gone)."""
        self.streams.pop(handle, None)

    def _meta(self, batch: pa.RecordBatch, bad: list[sources.BadRecord]) -> SourceMeta:
        return source_meta(self.store, batch, bad, self.on_bad_record)


@dataclass(frozen=True)
class SourceRange:
    """Rows ``[start, stop)`` of a source file, read by the first stage itself.

    Used for files a worker can read a range of without reading what comes
    before it (Parquet, by row group): the batch then skips the reader and,
    on Ray, the copy through the object store.
    """

    file: sources.SourceFile
    start: int
    stop: int
    schema: pa.Schema | None
    on_bad_record: str
    storage_options: dict[str, Any]

    @classmethod
    def of(cls, plan: Plan, bp: BatchPlan) -> SourceRange:
        """The range of batch ``bp``, read as ``plan``'s profile says."""
        profile = plan.profile
        src = bp.source
        return cls(
            src.file,
            src.start,
            src.stop,
            plan.pipeline.schema,
            profile.on_bad_record,
            profile.storage_options,
        )

    def read(self, store: ArtifactStore) -> tuple[SourceMeta, pa.RecordBatch]:
        """Read the range from the source; return its source meta and the batch."""
        ranges = [(self.start, self.stop)]
        batch, bad = next(sources.read(self.file, ranges, self.schema, self.storage_options))
        return source_meta(store, batch, bad, self.on_bad_record), batch


def streams_by_file(batches: Iterable[BatchPlan]) -> dict[str, list[BatchPlan]]:
    """The batches read by stream (from the source, not by range), per file identity."""
    by_file: dict[str, list[BatchPlan]] = {}
    for bp in batches:
        if bp.first_run == 0 and not bp.source.by_range:
            by_file.setdefault(bp.source.file.identity, []).append(bp)
    return by_file


def stream_handle(identity: str, n: int) -> str:
    """The name of the ``n``-th stream a run opens, for the file with ``identity``."""
    return f"{identity[:16]}-{n}"
