"""How a batch that starts from the source reaches the first stage.

Two ways in, chosen per file by the plan (``SourceBatch.by_range``):

* by range: a Parquet batch aligned with row groups is read by the first
  stage's actor itself (``SourceRange``), with no reader actor and no copy of
  the batch through the object store;
* by stream: any other file is read once, front to back, by a reader actor
  that keeps the stream open between batches; its batches go through the
  object store to the first stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ray

from winnow.execution.actors import SourceReader
from winnow.execution.pools import Pool, take_idle
from winnow.execution.reading import SourceRange, stream_handle, streams_by_file
from winnow.plan import BatchPlan, Plan
from winnow.storage.artifacts import ArtifactStore


class SourceInputs:
    """The reader actors of one job (none when every batch is read by range)."""

    def __init__(self, plan: Plan, artifacts: ArtifactStore, job_id: str, idle_key: Any) -> None:
        self.plan = plan
        self.profile = plan.profile
        self.readers: list[Any] = []
        self.streams: dict[str, tuple[int, str]] = {}
        if any(bp.first_run == 0 and not bp.source.by_range for bp in plan.batches):
            wanted = self.profile.reader_actors
            self.readers = take_idle(idle_key, wanted) if idle_key is not None else []
            reader_cls: Any = ray.remote(SourceReader)
            self.readers += [
                reader_cls.options(
                    name=f"winnow:{job_id}:read:{i}", num_cpus=0, max_restarts=3
                ).remote(
                    artifacts,
                    plan.pipeline.schema,
                    self.profile.on_bad_record,
                    self.profile.storage_options,
                )
                for i in range(len(self.readers), wanted)
            ]
        self.pool = Pool(self.readers)

    def open(self, batches: Iterable[BatchPlan]) -> None:
        """Open one read stream per file for the batches read by stream."""
        for n, (identity, group) in enumerate(streams_by_file(batches).items()):
            idx = n % len(self.readers)
            handle = stream_handle(identity, n)
            ranges = [(bp.source.start, bp.source.stop) for bp in group]
            self.readers[idx].open.remote(handle, group[0].source.file, ranges)
            self.streams[identity] = (idx, handle)

    def first(self, bp: BatchPlan) -> tuple[Any, Any, int | None]:
        """(source meta, batch, reader index) for the batch's first read.

        The meta and batch are object refs from a reader, or for a batch read
        by range no meta and the ``SourceRange`` the stage actor reads.
        """
        if bp.source.by_range:
            return None, SourceRange.of(self.plan, bp), None
        idx, handle = self.streams[bp.source.file.identity]
        meta, data = self.readers[idx].next.options(num_returns=2).remote(handle)
        return meta, data, idx

    def again(self, bp: BatchPlan) -> tuple[Any, Any, int | None]:
        """Like ``first``, for a retry: a reader reads the one range on its own."""
        if bp.source.by_range:
            return None, SourceRange.of(self.plan, bp), None
        idx = self.pool.any_live()
        src = bp.source
        reader = self.readers[idx]
        meta, data = reader.read_one.options(num_returns=2).remote(src.file, src.start, src.stop)
        return meta, data, idx
