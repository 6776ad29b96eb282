"""pipelines/exact_dedup.py with a pace: ``--set dedup.delay_s=0.3`` slows each map
batch and each reduce partition, so a test can kill a run mid-way without racing
it. The delay is output-neutral: paced and unpaced runs share their checkpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from winnow import Pipeline
from winnow.pipeline import load_pipeline

_base = load_pipeline(str(Path(__file__).resolve().parents[2] / "pipelines" / "exact_dedup.py"))
ExactDedup = type(_base.stages[0])


@dataclass
class PacedDedup(ExactDedup):  # type: ignore[misc, valid-type]
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        time.sleep(self.delay_s)
        return super().key(batch)

    def reduce_stream(self, shards: Iterator[pa.Table]):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        yield from super().reduce_stream(shards)


pipeline = Pipeline(name="paced_dedup", stages=[PacedDedup()], schema=_base.schema)
