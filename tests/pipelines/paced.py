"""A test pipeline whose pace and failures the tests control through parameters.

``winnow run tests/pipelines/paced.py --set pace.delay_s=0.3`` makes every
batch take at least 0.3 s, so a test can interrupt a run mid-way without
racing it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage


@dataclass
class Pace(Stage):
    """Passes batches through after sleeping ``delay_s``."""

    name = "pace"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)

    delay_s: float = 0.0

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        time.sleep(self.delay_s)
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


pipeline = Pipeline(name="paced", stages=[Pace(), Upper()])
