"""Running one stage on one batch, the same in a Ray actor and in the driver.

A ``StageProcessor`` owns one stage instance (``setup()`` once), runs
``process`` on each batch it is given (or, given a ``SourceRange``, reads it
first), writes the output as a verified artifact and returns a small record
(a ``StageResult``) with the output batch. Exceptions from the stage are
caught and returned in the record so the driver decides about retries;
nothing here writes checkpoints or imports Ray (``actors.StageWorker`` wraps
this class as an actor; the local executor runs it in the driver).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any

import pyarrow as pa

from winnow.errors import IntegrityError
from winnow.execution.reading import SourceRange
from winnow.grouping import MapSide, ReduceSide, split_reduced, with_position
from winnow.records import BatchStatus, ErrorRecord, SourceMeta, StageResult
from winnow.rejoin import Rejoin
from winnow.stage import Stage
from winnow.storage.artifacts import ArtifactStore

STORE_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def as_batch(table: pa.Table) -> pa.RecordBatch:
    """One contiguous record batch holding the whole table."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


class StageProcessor:
    """One stage instance: set up once, then given batch after batch.

    Args:
        stage: the stage (``setup()`` is called here).
        store: where output artifacts are written.
        fmt: the artifact format.
        compression: the artifact compression.
        node_id: the Ray node it runs on, recorded with each result (None off Ray).
    """

    def __init__(
        self,
        stage: Stage,
        store: ArtifactStore,
        fmt: str,
        compression: str,
        node_id: str | None = None,
    ) -> None:
        self.stage = stage
        self.store = store
        self.fmt = fmt
        self.compression = compression
        self.node = socket.gethostname()
        self.node_id = node_id
        self.bytes_in = 0  # the last batch's input size, for the metrics
        self._context: tuple[tuple[str, ...], Any] | None = None  # a rejoin's, by digests
        self.stage.setup()

    def run(
        self,
        data: Any,
        source_meta: SourceMeta | None = None,
        keep_output: bool = True,
        position: tuple[str, int] | None = None,
        context: list[dict[str, Any]] | None = None,
    ) -> tuple[StageResult, pa.RecordBatch | None]:
        """Process one batch and commit its artifact; never raises for stage errors.

        The output batch is returned for the next stage only when
        ``keep_output``; the last stage's output lives in its artifact alone.
        The batch's key is the driver's: it is neither sent here nor returned.
        ``position`` is where the batch starts in its input (file URL, row):
        a grouping stage's map side numbers its rows from it, a rejoin stage
        too. ``context``: a rejoin stage's context artifacts.
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
        result, out = self._run(result, data, position, context)
        self.observe(result)
        return result, out if keep_output else None

    def observe(self, result: StageResult) -> None:
        """Called with the result of each batch this stage processed.

        Not called for a failed range read. The Ray actor exports it as metrics.
        """

    def _run(
        self,
        result: StageResult,
        data: Any,
        position: tuple[str, int] | None = None,
        context: list[dict[str, Any]] | None = None,
    ) -> tuple[StageResult, pa.RecordBatch | None]:
        self.bytes_in = 0
        try:
            t0 = time.perf_counter()
            if isinstance(self.stage, ReduceSide):
                out = self._reduce(result, data)
            else:
                batch = self._load(data)
                result.rows_in = batch.num_rows
                self.bytes_in = batch.nbytes
                t0 = time.perf_counter()
                if isinstance(self.stage, MapSide):
                    out = self._split(result, batch, position)
                elif isinstance(self.stage, Rejoin):
                    out = self._rejoin(result, batch, position, context)
                else:
                    out = self._process(batch)
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
        # A map side passes every row on, into its shards; its artifact is their index.
        result.rows_out = result.rows_in if result.shards is not None else out.num_rows
        result.duration_s = _since(result)
        return result, out

    def _process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        out = self.stage.process(batch)
        if isinstance(out, pa.Table):
            out = as_batch(out)
        if not isinstance(out, pa.RecordBatch):
            raise TypeError(
                f"stage {self.stage.stage_name!r} returned {type(out).__name__}; "
                "process() must return a pyarrow.RecordBatch"
            )
        return out

    def _split(
        self, result: StageResult, batch: pa.RecordBatch, position: tuple[str, int] | None
    ) -> pa.RecordBatch:
        """A grouping map side: commit a shard per partition; the output is their index."""
        assert isinstance(self.stage, MapSide)
        if position is None:
            raise ValueError(f"stage {self.stage.stage_name!r} needs the batch's source position")
        shards = self.stage.split(batch, *position)
        refs = {
            str(p): self.store.put(shard, self.fmt, self.compression).to_dict()
            for p, shard in sorted(shards.items())
        }
        result.shards = refs
        return self.stage.index(refs)

    def _reduce(self, result: StageResult, data: Any) -> pa.RecordBatch:
        """A grouping reduce side: its partition's shards in; commits what it removed."""
        assert isinstance(self.stage, ReduceSide)
        if not (isinstance(data, dict) and "shards" in data):
            raise TypeError(f"stage {self.stage.stage_name!r} reads shards, not {type(data)}")
        result.rows_in = sum(int(ref["records"]) for ref in data["shards"])
        tables = (self.store.read(ref) for ref in data["shards"])
        kept, removed = self.stage.reduce_shards(tables)
        if removed is not None:
            result.removed = self.store.put(removed, self.fmt, self.compression).to_dict()
        return kept

    def _rejoin(
        self,
        result: StageResult,
        batch: pa.RecordBatch,
        position: tuple[str, int] | None,
        context: list[dict[str, Any]] | None,
    ) -> pa.RecordBatch:
        """A rejoin stage: an input batch (with positions) and its prepared context."""
        assert isinstance(self.stage, Rejoin)
        if position is None or context is None:
            raise ValueError(f"rejoin stage {self.stage.stage_name!r} needs position and context")
        digests = tuple(str(ref["digest"]) for ref in context)
        if self._context is None or self._context[0] != digests:
            self._context = None  # the old one's memory first
            tables = [self.store.read(ref) for ref in context]
            table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
            self._context = digests, self.stage.prepare(table)
        kept, removed = split_reduced(
            self.stage.rejoin(with_position(batch, *position), self._context[1])
        )
        if removed is not None:
            result.removed = self.store.put(removed, self.fmt, self.compression).to_dict()
        return kept

    def _load(self, data: Any) -> pa.RecordBatch:
        if isinstance(data, pa.RecordBatch):
            return data
        if isinstance(data, dict) and "artifact" in data:
            return as_batch(self.store.read(data["artifact"]))
        raise TypeError(f"unexpected stage input {type(data).__name__}")

    def teardown(self) -> None:
        """Run the stage's ``teardown()``."""
        self.stage.teardown()


def _since(result: StageResult) -> float:
    return time.time() - (result.started_at or 0.0)


def _failed(result: StageResult, status: BatchStatus, exc: BaseException) -> StageResult:
    result.status = status
    result.error = ErrorRecord.of(exc)
    result.duration_s = _since(result)
    return result
