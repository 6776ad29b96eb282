"""Sizing a grouping stage's partitions to its input and the profile's budget."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from winnow.grouping import GlobalStage, GroupingStage
from winnow.partitions import COMPRESSED_RATIO, input_bytes, size_partitions
from winnow.pipeline import StageSpec
from winnow.sources import SourceFile
from winnow.stage import Resources

MB = 1 << 20


@dataclass
class ByKey(GroupingStage):
    name = "bykey"
    partitions: int = 4  # type: ignore[misc]

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        return batch.column(0)


@dataclass
class All(GlobalStage):
    name = "all"


def specs(*stages: object) -> list[StageSpec]:
    return [StageSpec(s, Resources()) for s in stages]  # type: ignore[arg-type]


def test_enough_partitions_are_kept_and_too_few_raised_to_a_power_of_two():
    stage = ByKey()
    kept = size_partitions(specs(stage), 3 * 512 * MB, 512)
    assert kept[0].stage is stage and stage.partitions == 4  # 3 needed, 4 declared
    raised = size_partitions(specs(stage), 5 * 512 * MB, 512)[0].stage
    assert raised is not stage and stage.partitions == 4  # a copy: the pipeline is untouched
    assert raised.partitions == 8 and raised.declared_partitions == 4  # type: ignore[attr-defined]
    assert size_partitions(specs(stage), 9 * 512 * MB, 512)[0].stage.partitions == 16
    assert size_partitions(specs(stage), 8 * 512 * MB, 512)[0].stage.partitions == 8


def test_the_count_moves_only_when_the_input_doubles():
    counts = [
        size_partitions(specs(ByKey(partitions=1)), n * 100 * MB, 100)[0].stage.partitions
        for n in (5, 6, 7, 8, 9)
    ]
    assert counts == [8, 8, 8, 8, 16]


def test_a_global_stage_keeps_its_one_partition():
    assert size_partitions(specs(All()), 10_000 * MB, 1)[0].stage.partitions == 1


def test_compressed_inputs_count_larger_than_their_files():
    files = [
        SourceFile("file:///a.jsonl", "jsonl", None, 10, "v"),
        SourceFile("file:///b.jsonl.zst", "jsonl", "zstd", 10, "v"),
        SourceFile("file:///c.parquet", "parquet", None, 10, "v"),
    ]
    assert input_bytes(files) == 10 + 2 * 10 * COMPRESSED_RATIO
