"""pipelines/fuzzy_dedup.py with a pace: ``--set minhash.delay_s=S`` slows each
signature batch, ``--set lsh.delay_s=S`` each band bucket partition and
``--set components.delay_s=S`` the connected components step, so a test can kill
a run in any of them without racing it. The delays are output-neutral: paced and
unpaced runs share their checkpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from winnow import Pipeline
from winnow.pipeline import load_pipeline

_base = load_pipeline(str(Path(__file__).resolve().parents[2] / "pipelines" / "fuzzy_dedup.py"))
MinHash, LSH, Components, Keep = (type(s) for s in _base.stages)


@dataclass
class PacedMinHash(MinHash):  # type: ignore[misc, valid-type]
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        time.sleep(self.delay_s)
        return super().process(batch)


@dataclass
class PacedLSH(LSH):  # type: ignore[misc, valid-type]
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def reduce(self, rows: pa.Table):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        return super().reduce(rows)


@dataclass
class PacedComponents(Components):  # type: ignore[misc, valid-type]
    neutral_params: ClassVar[tuple[str, ...]] = ("delay_s",)

    delay_s: float = 0.0

    def reduce(self, rows: pa.Table):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        return super().reduce(rows)


pipeline = Pipeline(
    name="paced_fuzzy",
    stages=[PacedMinHash(), PacedLSH(), PacedComponents(), Keep()],
    schema=_base.schema,
)
