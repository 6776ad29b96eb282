"""Ray actors: source readers and stage workers.

A stage worker owns one stage instance (``setup()`` once), runs ``process`` on
each batch it is sent (or, given a ``SourceRange``, reads itself), writes the
output as a verified artifact and returns a small record (a ``StageResult``)
plus the output batch (which stays in Ray's object store for the next stage).
Exceptions from the stage are caught and returned in the record so the driver
decides about retries; nothing here writes checkpoints.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray

from winnow import sources
from winnow.errors import IntegrityError
from winnow.execution import telemetry
from winnow.records import BatchStatus, ErrorRecord, SourceMeta, StageResult
from winnow.stage import Stage
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.formats import serialize

STORE_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


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


def as_batch(table: pa.Table) -> pa.RecordBatch:
    """One contiguous record batch holding the whole table."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


@dataclass
class _Stream:
    file: sources.SourceFile
    ranges: list[tuple[int, int]]
    batches: Iterator[tuple[pa.RecordBatch, list[sources.BadRecord]]]
    position: int = 0


class SourceReader:
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

    def ready(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def open(self, handle: str, file: sources.SourceFile, ranges: list[tuple[int, int]]) -> None:
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
        self.streams.pop(handle, None)

    def _meta(self, batch: pa.RecordBatch, bad: list[sources.BadRecord]) -> SourceMeta:
        return source_meta(self.store, batch, bad, self.on_bad_record)


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


@dataclass(frozen=True)
class SourceRange:
    """Rows ``[start, stop)`` of a source file, read by the first stage's actor itself.

    Used for files a worker can read a range of without reading what comes
    before it (Parquet, by row group): the batch then skips the reader actor and
    the copy through the object store.
    """

    file: sources.SourceFile
    start: int
    stop: int
    schema: pa.Schema | None
    on_bad_record: str
    storage_options: dict[str, Any]

    def read(self, store: ArtifactStore) -> tuple[SourceMeta, pa.RecordBatch]:
        ranges = [(self.start, self.stop)]
        batch, bad = next(sources.read(self.file, ranges, self.schema, self.storage_options))
        return source_meta(store, batch, bad, self.on_bad_record), batch


class StageWorker:
    """One actor of a stage's pool."""

    def __init__(self, stage: Stage, store: ArtifactStore, fmt: str, compression: str) -> None:
        self.stage = stage
        self.store = store
        self.fmt = fmt
        self.compression = compression
        self.node = socket.gethostname()
        self.node_id = ray.get_runtime_context().get_node_id()
        self._bytes_in = 0  # the last batch's input size, for the metrics
        self.stage.setup()
        gpus = ray.get_gpu_ids()
        self.gpu_sampler = telemetry.GpuSampler(stage.stage_name, gpus) if gpus else None
        if self.gpu_sampler is not None:
            self.gpu_sampler.start()

    def ready(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def run(
        self,
        data: Any,
        source_meta: SourceMeta | None = None,
        keep_output: bool = True,
    ) -> tuple[StageResult, pa.RecordBatch | None]:
        """Process one batch and commit its artifact; never raises for stage errors.

        The output batch goes back to the object store for the next stage only
        when ``keep_output``; the last stage's output lives in its artifact alone.
        The batch's key is the driver's: it is neither sent here nor returned.
        """
        result = StageResult(
            BatchStatus.RUNNING,
            source_meta=source_meta,
            started_at=time.time(),
            node=self.node,
            node_id=self.node_id,
            pid=os.getpid(),
        )
        if isinstance(data, SourceRange):
            try:
                result.source_meta, data = data.read(self.store)
            except Exception as exc:  # a batch that fails to read fails alone, as with a reader
                return _failed(result, BatchStatus.FAILED, exc), None
        result, out = self._run(result, data)
        telemetry.record_batch(self.stage.stage_name, result, self._bytes_in)
        return result, out if keep_output else None

    def _run(self, result: StageResult, data: Any) -> tuple[StageResult, pa.RecordBatch | None]:
        self._bytes_in = 0
        try:
            batch = self._load(data)
            result.rows_in = batch.num_rows
            self._bytes_in = batch.nbytes
            t0 = time.perf_counter()
            out = self.stage.process(batch)
            if isinstance(out, pa.Table):
                out = as_batch(out)
            if not isinstance(out, pa.RecordBatch):
                raise TypeError(
                    f"stage {self.stage.stage_name!r} returned {type(out).__name__}; "
                    "process() must return a pyarrow.RecordBatch"
                )
            result.process_s = time.perf_counter() - t0
            result.metrics = self.stage.batch_metrics() or None
            t1 = time.perf_counter()
            ref = self.store.put(out, self.fmt, self.compression)
            result.commit_s = time.perf_counter() - t1
        except IntegrityError as exc:
            return _failed(result, BatchStatus.INTEGRITY, exc), None
        except OSError as exc:
            # A full, read-only or over-quota store fails every batch alike: the
            # driver stops the job instead of retrying them all.
            status = BatchStatus.STORAGE if exc.errno in STORE_FULL else BatchStatus.FAILED
            return _failed(result, status, exc), None
        except Exception as exc:
            return _failed(result, BatchStatus.FAILED, exc), None
        result.status = BatchStatus.SUCCEEDED
        result.artifact = ref.to_dict()
        result.rows_out = out.num_rows
        result.duration_s = _since(result)
        return result, out

    def _load(self, data: Any) -> pa.RecordBatch:
        if isinstance(data, pa.RecordBatch):
            return data
        if isinstance(data, dict) and "artifact" in data:
            return as_batch(self.store.read(data["artifact"]))
        raise TypeError(f"unexpected stage input {type(data).__name__}")

    def shutdown(self) -> None:
        if self.gpu_sampler is not None:
            self.gpu_sampler.close()
        self.stage.teardown()


def _since(result: StageResult) -> float:
    return time.time() - (result.started_at or 0.0)


def _failed(result: StageResult, status: BatchStatus, exc: BaseException) -> StageResult:
    result.status = status
    result.error = ErrorRecord.of(exc)
    result.duration_s = _since(result)
    return result
