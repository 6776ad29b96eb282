"""The grouping stage kind, without an executor: partitions, sides, splitting the stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    Reduced,
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


@dataclass
class FirstOfEach(GroupingStage):
    """Streams: keeps the first row of each key, holding the keys seen and one shard."""

    name = "first"

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        return batch.column("v").cast(pa.uint64())

    def reduce_stream(self, shards):  # type: ignore[no-untyped-def]
        seen: set[int] = set()
        for rows in shards:
            keys = rows.column(KEY).to_pylist()
            fresh = []
            for k in keys:
                fresh.append(k not in seen)
                seen.add(k)
            yield Reduced(rows.filter(pa.array(fresh)), rows.filter(pa.array(fresh)).slice(0, 0))


def test_a_streaming_reduce_reads_one_shard_at_a_time_in_the_order_given():
    read: list[int] = []
    shards = [
        pa.table({"v": [i % 3, 5], KEY: pa.array([i % 3, 5], pa.uint64()), FILE: ["a"] * 2,
                  ROW: [2 * i, 2 * i + 1]})
        for i in range(4)
    ]  # fmt: skip

    def lazily():  # records what the reduce has pulled when each shard is read
        for i, shard in enumerate(shards):
            read.append(i)
            yield shard

    stage = FirstOfEach()
    pulled: list[list[int]] = []
    inner = stage.reduce_stream

    def watching(it):  # type: ignore[no-untyped-def]
        for out in inner(it):
            pulled.append(list(read))
            yield out

    stage.reduce_stream = watching  # type: ignore[method-assign]
    kept, removed = ReduceSide(stage).reduce_shards(lazily())
    assert pulled == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]  # never more than one ahead
    assert kept.to_pydict() == {"v": [0, 5, 1, 2]}  # the first of each key, in source order
    assert removed is not None and removed.num_rows == 0


def test_a_partitions_shards_keep_source_order_and_its_key_does_not_depend_on_it():
    from winnow.partitions import partition_batches

    def ref(d: str) -> dict[str, object]:
        return {"digest": d, "records": 1, "bytes": 10}

    records = [{"shards": {"0": ref("z")}}, {"shards": {"0": ref("a"), "1": ref("m")}}]
    (sb0, shards0), (_, shards1) = partition_batches("g", records)  # type: ignore[arg-type]
    assert [s["digest"] for s in shards0] == ["z", "a"] and len(shards1) == 1
    swapped = partition_batches("g", records[::-1])  # type: ignore[arg-type]
    assert swapped[0][0].key == sb0.key  # the same shards: the same partition key


STAGE_SOURCE = """
from dataclasses import dataclass
import pyarrow as pa
from winnow import Pipeline
from winnow.grouping import GroupingStage

def helper(rows):
    return rows.slice(0, {keep})

@dataclass
class Grouped(GroupingStage):
    name = "grouped"

    def key(self, batch):
        return batch.column("v").cast(pa.uint64()){key_edit}

    def reduce(self, rows):
        return helper(rows)

pipeline = Pipeline(name="p{n}", stages=[Grouped()])
"""


def test_editing_the_reduce_reruns_the_reduce_side_alone(tmp_path: Path) -> None:
    from winnow.pipeline import load_pipeline

    def sides(n: int, keep: int, key_edit: str = "") -> tuple[str, str]:
        path = tmp_path / f"p{n}.py"
        path.write_text(STAGE_SOURCE.format(n=n, keep=keep, key_edit=key_edit))
        stage = load_pipeline(str(path)).stages[0]
        before, after = split_specs([StageSpec(stage, Resources())])
        assert after is not None
        return before[-1].stage.fingerprint(), after[0].stage.fingerprint()

    base = sides(0, 1)
    reduce_edited = sides(1, 2)  # helper() is reached from reduce() alone
    key_edited = sides(2, 1, ".cast(pa.uint64())")
    assert reduce_edited[0] == base[0] and reduce_edited[1] != base[1]
    assert key_edited[0] != base[0] and key_edited[1] != base[1]
