"""A test pipeline whose failures the tests control through parameters.

``--set flaky.fail_mod=20 --set flaky.fail_times=1 --set flaky.marks=DIR`` makes
each batch holding an ``id`` divisible by 20 fail its first try, then pass: the
tries are counted in files under ``DIR``, so the count holds whichever process
(a Ray actor, or the driver) runs the stage. ``fail_times`` above the profile's
``max_attempts`` makes those batches poison.
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
class Flaky(Stage):
    """Passes batches through, failing those with a ``fail_mod`` id ``fail_times`` times."""

    name = "flaky"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)
    neutral_params = ("marks",)  # a scratch folder: where it is changes no output

    marks: str = ""
    fail_mod: int = 1000
    fail_times: int = 0

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        hits = [i for i in batch.column("id").to_pylist() if i % self.fail_mod == 0]
        if hits and self.fail_times:
            mark = Path(self.marks) / str(min(hits))
            tries = int(mark.read_text()) if mark.exists() else 0
            if tries < self.fail_times:
                mark.write_text(str(tries + 1))
                raise RuntimeError(f"flaky: failing on purpose (try {tries + 1})")
        return batch

    def teardown(self) -> None:
        """Leave a mark in ``marks`` (when it exists): the tests count teardowns."""
        if self.marks and Path(self.marks).is_dir():
            (Path(self.marks) / f"teardown-{os.getpid()}-{time.time_ns()}").touch()


@dataclass
class Upper(Stage):
    """Uppercases ``text``."""

    name = "upper"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        text = pc.utf8_upper(batch.column("text"))
        return batch.set_column(batch.schema.get_field_index("text"), "text", text)


pipeline = Pipeline(name="flaky", stages=[Flaky(), Upper()], schema=SCHEMA)
