"""A test pipeline with one batch that stalls on its first try.

``--set sleepy.sleep_id=25 --set sleepy.sleep_s=30 --set sleepy.marks=DIR``
makes the batch holding id 25 sleep 30 s the first time any process runs it
(a mark file in ``DIR`` remembers the try), and run at once every time after:
a straggler whose speculative or retried attempt is fast. The sleep's
parameters are output-neutral, so a clean run has the same keys and bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


@dataclass
class Sleepy(Stage):
    """Passes batches through; the one holding ``sleep_id`` sleeps ``sleep_s`` on its first try."""

    name = "sleepy"
    version = "1"
    resources = Resources(num_cpus=0.5, min_actors=2, max_actors=2)
    neutral_params = ("marks", "sleep_id", "sleep_s")

    marks: str = ""
    sleep_id: int = -1
    sleep_s: float = 0.0

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.marks and self.sleep_id in batch.column("id").to_pylist():
            mark = Path(self.marks) / f"slept-{self.sleep_id}"
            if not mark.exists():
                mark.touch()
                time.sleep(self.sleep_s)
        return batch


@dataclass
class Upper(Stage):
    """Uppercases ``text``."""

    name = "upper"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        text = pc.utf8_upper(batch.column("text"))
        return batch.set_column(batch.schema.get_field_index("text"), "text", text)


pipeline = Pipeline(name="stalling", stages=[Sleepy(), Upper()], schema=SCHEMA)
