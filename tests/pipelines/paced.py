"""A test pipeline whose pace and failures the tests control through parameters.

``winnow run tests/pipelines/paced.py --set pace.delay_s=0.3`` makes every
batch take at least 0.3 s, so a test can interrupt a run mid-way without
racing it.
"""

from __future__ import annotations

import os
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
    # While the file ``fail_flag`` exists, a batch holding an ``id`` divisible by
    # ``fail_mod`` raises: a transient failure a test can switch off.
    fail_flag: str = ""
    fail_mod: int = 1000

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        time.sleep(self.delay_s)
        if self.fail_flag and os.path.exists(self.fail_flag):
            ids = batch.column("id").to_pylist()
            if any(isinstance(i, int) and i % self.fail_mod == 0 for i in ids):
                raise RuntimeError(f"flaky upstream: {self.fail_flag} exists")
        return batch


@dataclass
class Upper(Stage):
    """Uppercases ``text``."""

    name = "upper"
    version = "1"
    resources = Resources(num_cpus=0.5, max_actors=1)

    setup_error: str = ""  # when set, setup() raises it (a missing model, an absent GPU)
    delay_s: float = 0.0

    def setup(self) -> None:
        if self.setup_error:
            raise RuntimeError(self.setup_error)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        time.sleep(self.delay_s)
        text = pc.utf8_upper(batch.column("text"))
        return batch.set_column(batch.schema.get_field_index("text"), "text", text)


pipeline = Pipeline(name="paced", stages=[Pace(), Upper()])
