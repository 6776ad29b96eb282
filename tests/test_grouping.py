"""The grouping stage kind, without an executor: partitions, sides, splitting the stages."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pytest

from winnow.errors import ConfigError
from winnow.grouping import (
    FILE,
    KEY,
    ROW,
    GlobalStage,
    GroupingStage,
    MapSide,
    ReduceSide,
    expand,
    split_specs,
)
from winnow.pipeline import StageSpec
from winnow.records import record_artifacts
from winnow.stage import Resources, Stage


@dataclass
class ByMod(GroupingStage):
    name = "bymod"
    partitions = 4

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        return pa.array([v * 7 for v in batch.column("v").to_pylist()], pa.uint64())

    def reduce(self, rows: pa.Table) -> pa.Table:
        return rows.slice(0, 1)


@dataclass
class Noop(Stage):
    name = "noop"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch


def test_map_side_splits_by_key_and_numbers_rows_from_the_batch_start():
    batch = pa.RecordBatch.from_pydict({"v": list(range(10))})
    shards = MapSide(ByMod()).split(batch, "file:///in.jsonl", 100)
    assert sorted(shards) == [0, 1, 2, 3]
    for p, shard in shards.items():
        assert all((v * 7) % 4 == p for v in shard.column("v").to_pylist())
        assert shard.column(KEY).type == pa.uint64()
        assert set(shard.column(FILE).to_pylist()) == {"file:///in.jsonl"}
    rows = sorted(r for s in shards.values() for r in s.column(ROW).to_pylist())
    assert rows == list(range(100, 110))


def test_reduce_side_sees_source_order_and_drops_framework_columns():
    side = ReduceSide(ByMod())
    late = pa.table({"v": [1], KEY: pa.array([7], pa.uint64()), FILE: ["b"], ROW: [0]})
    early = pa.table({"v": [2], KEY: pa.array([14], pa.uint64()), FILE: ["a"], ROW: [5]})
    kept, removed = side.reduce_shards([late, early])
    assert kept.to_pydict() == {"v": [2]} and removed is None


def test_the_sides_are_named_and_fingerprinted_apart():
    spec = StageSpec(ByMod(), Resources())
    before, after = split_specs([StageSpec(Noop(), Resources()), spec])
    assert after is not None
    assert [s.name for s in before] == ["noop", "bymod.map"]
    assert [s.name for s in after] == ["bymod.reduce"]
    assert before[-1].stage.fingerprint() != after[0].stage.fingerprint()
    assert split_specs([spec])[1] is not None and split_specs(before[:1]) == (before[:1], None)


def test_stages_split_at_the_first_grouping_stage_and_expand_into_every_side():
    other = ByMod()
    other.name = "second"  # type: ignore[misc]
    specs = [
        StageSpec(ByMod(), Resources()),
        StageSpec(Noop(), Resources()),
        StageSpec(other, Resources()),
    ]
    before, after = split_specs(specs)
    assert [s.name for s in before] == ["bymod.map"]
    assert after is not None and [s.name for s in after] == ["bymod.reduce", "noop", "second"]
    assert [s.name for s in expand(specs)] == [
        "bymod.map",
        "bymod.reduce",
        "noop",
        "second.map",
        "second.reduce",
    ]


@dataclass
class Everything(GlobalStage):
    name = "everything"

    def reduce(self, rows: pa.Table) -> pa.Table:
        return rows


def test_a_global_stage_is_one_partition_holding_every_row():
    batch = pa.RecordBatch.from_pydict({"v": list(range(10))})
    shards = MapSide(Everything()).split(batch, "file:///x", 0)
    assert list(shards) == [0] and shards[0].num_rows == 10
    bad = Everything()
    bad.partitions = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="global stage 'everything' has one partition"):
        split_specs([StageSpec(bad, Resources())])


def test_a_checkpoint_lists_its_shards_and_removed_rows_as_artifacts():
    ref = {"digest": "d"}
    rec = {"artifact": ref, "shards": {"1": ref, "0": ref}, "removed": ref}
    assert [what for what, _ in record_artifacts(rec)] == [
        "artifact",
        "shard 0",
        "shard 1",
        "removed artifact",
    ]
