"""A rejoin after a global stage: each row's share of the longest text.

``size`` (per batch) keeps each row's id and word count, ``longest`` (global)
finds the largest count over every input, and ``share`` (a rejoin stage) reads
the input again and gives each row its count over that largest one, setting
aside rows without words. ``tag`` (per batch) runs on what ``share`` passes
on. ``--set share.delay_s=S`` paces the rejoin and ``--set longest.delay_s=S``
the global stage (output neutral), so a test can act during either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage
from winnow.grouping import FILE, ROW, GlobalStage, Reduced
from winnow.rejoin import Rejoin

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


def words(batch: pa.RecordBatch) -> pa.Array:
    """How many words a text has: its texts are made of the word "w"."""
    return pc.cast(pc.count_substring(batch.column("text"), "w"), pa.int64())


@dataclass
class Size(Stage):
    name = "size"
    version = "1"
    resources = Resources(num_cpus=0.5)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([batch.column("id"), words(batch)], ["id", "words"])


@dataclass
class Longest(GlobalStage):
    name = "longest"
    version = "1"
    resources = Resources(num_cpus=0.5)
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def reduce(self, rows: pa.Table) -> pa.Table:
        time.sleep(self.delay_s)
        return pa.table({"longest": [pc.max(rows.column("words")).as_py() or 0]})


@dataclass
class Share(Rejoin):
    name = "share"
    version = "1"
    resources = Resources(num_cpus=0.5)
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def prepare(self, context: pa.Table) -> Any:
        return context.column("longest")[0].as_py()

    def rejoin(self, batch: pa.RecordBatch, context: Any) -> Reduced:
        time.sleep(self.delay_s)
        n = words(batch)
        out = batch.append_column("share", pc.divide(pc.cast(n, pa.float64()), float(context)))
        empty = pc.equal(n, 0)
        removed = batch.filter(empty).select(["id", FILE, ROW])
        return Reduced(out.filter(pc.invert(empty)), removed)


@dataclass
class Tag(Stage):
    name = "tag"
    version = "1"
    resources = Resources(num_cpus=0.5)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        whole = pc.equal(batch.column("share"), 1.0)
        return batch.append_column("tag", pc.if_else(whole, "longest", "shorter"))


pipeline = Pipeline(
    name="rejoin_share",
    stages=[Size(), Longest(), Share(), Tag()],
    schema=SCHEMA,
)
