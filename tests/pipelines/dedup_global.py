"""Three barriers' worth of stages: exact dedup (a grouping stage), a per-batch
stage on its partitions, a global stage over everything kept, and a per-batch
stage on the global stage's output.

``rank`` (global) gives each kept row its place among all kept rows by id, and
the total count: neither can be known from one partition. ``label`` then
adds a column per row. ``--set rank.delay_s=S`` paces the global stage (output
neutral) so a test can kill a run during it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage
from winnow.grouping import GlobalStage
from winnow.pipeline import load_pipeline

_base = load_pipeline(str(Path(__file__).resolve().parents[2] / "pipelines" / "exact_dedup.py"))
ExactDedup = type(_base.stages[0])


@dataclass
class Words(Stage):
    name = "words"
    version = "1"
    resources = Resources(num_cpus=0.5)  # a segment's stages all hold an actor at once

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        words = pc.list_value_length(pc.utf8_split_whitespace(batch.column("text")))
        return batch.append_column("words", pc.cast(words, pa.int64()))


@dataclass
class Rank(GlobalStage):
    name = "rank"
    version = "1"
    resources = Resources(num_cpus=0.5)
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def reduce(self, rows: pa.Table) -> pa.Table:
        time.sleep(self.delay_s)
        order = np.argsort(np.asarray(rows.column("id")), kind="stable")
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        rows = rows.append_column("rank", pa.array(rank))
        return rows.append_column("kept", pa.array(np.full(len(order), len(order), np.int64)))


@dataclass
class Label(Stage):
    name = "label"
    version = "1"
    resources = Resources(num_cpus=0.5)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        long = pc.greater(batch.column("words"), 6)
        return batch.append_column("label", pc.if_else(long, "long", "short"))


pipeline = Pipeline(
    name="dedup_global",
    stages=[ExactDedup(partitions=3), Words(), Rank(), Label()],
    schema=_base.schema,
)
