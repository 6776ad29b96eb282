"""A test pipeline with one batch that stalls on its first try.

``--set sleepy.sleep_id=25 --set sleepy.sleep_s=30 --set sleepy.marks=DIR``
makes the batch holding id 25 sleep 30 s the first time any process runs it
(a mark file in ``DIR`` remembers the try), and run at once every time after:
a straggler whose speculative or retried attempt is fast (``again_s`` makes
the second try sleep instead, so the first one wins). The sleeps are
output-neutral, so a clean run has the same keys and bytes.
"""

from __future__ import annotations

import os
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
    neutral_params = ("marks", "sleep_id", "sleep_s", "again_s", "again_fails")

    marks: str = ""
    sleep_id: int = -1
    sleep_s: float = 0.0
    again_s: float = 0.0  # how long its second try sleeps
    again_fails: bool = False  # its second try raises (after sleeping again_s)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.marks and self.sleep_id in batch.column("id").to_pylist():
            first, second = (Path(self.marks) / f"{n}-{self.sleep_id}" for n in ("slept", "again"))
            if not first.exists():
                first.write_text(str(os.getpid()))  # the tests look for this process
                time.sleep(self.sleep_s)
            elif not second.exists():
                second.touch()
                time.sleep(self.again_s)
                if self.again_fails:
                    raise RuntimeError("sleepy: the second try fails on purpose")
        return batch


@dataclass
class Upper(Stage):
    """Uppercases ``text``."""

    name = "upper"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)
    neutral_params = ("delay_s",)

    delay_s: float = 0.0  # every batch sleeps this long: a run that goes on for a while

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        time.sleep(self.delay_s)
        text = pc.utf8_upper(batch.column("text"))
        return batch.set_column(batch.schema.get_field_index("text"), "text", text)


pipeline = Pipeline(name="stalling", stages=[Sleepy(), Upper()], schema=SCHEMA)
