"""Grouping stages: a stage that sees every row sharing a key at once.

A grouping stage (``GroupingStage``) declares a ``key`` (one 64-bit hash or
digest per row, e.g. of normalized text) and a ``reduce`` that receives one
partition of the dataset: every row whose key falls in it, from every input
batch. The executor runs it in two sides, each a stage of its own:

* the **map side** (``MapSide``, stage ``<name>.map``) runs per input batch:
  it hashes each row's key into one of ``partitions`` partitions and the
  executor commits each non-empty partition as a content-addressed shard;
* the **reduce side** (``ReduceSide``, stage ``<name>.reduce``) runs once per
  partition, on the shards every map batch wrote for it, and what it emits
  flows into the stages after it like any batch.

A ``GlobalStage`` is a grouping stage with one partition and no key: its
reduce sees all of its input once. A pipeline may hold several grouping and
global stages: each is a barrier, and the stages between two barriers run
once per partition of the first.

Both sides are plain stages to the executor, keyed, committed and skipped
like any other; what is special (writing shards, reading them back) is the
executor's. Nothing here knows Ray or storage.

Every row carries its source position through the map side (the input file's
URL and its row's place in that file, columns ``_winnow_file`` and
``_winnow_row``), so a reduce can keep "the first occurrence" the same way on
every run and every partition; the partition handed to ``reduce`` is sorted
by it. Columns named ``_winnow_*`` are the framework's: they are dropped from
the rows ``reduce`` keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.errors import ConfigError
from winnow.fingerprint import code_digest
from winnow.pipeline import StageSpec
from winnow.rejoin import Rejoin
from winnow.stage import Stage

KEY = "_winnow_key"
FILE = "_winnow_file"
ROW = "_winnow_row"
INTERNAL = "_winnow_"
MAP, REDUCE = "map", "reduce"
REDUCE_METHODS = frozenset({"reduce", "reduce_stream"})  # not run by the map side


@dataclass(frozen=True)
class Reduced:
    """What ``GroupingStage.reduce`` returns when it also sets rows aside.

    Attributes:
        kept: the rows that flow on to the next stage.
        removed: rows taken out (duplicates, with why); committed as a second
            artifact of the partition (``winnow inspect removed``).
    """

    kept: pa.RecordBatch | pa.Table
    removed: pa.RecordBatch | pa.Table | None = None


class GroupingStage(Stage):
    """Base class of a grouping stage: a ``key`` per row and a ``reduce`` per partition.

    Subclasses set ``name``, ``version`` and ``partitions`` and override
    ``key`` and ``reduce``; their dataclass fields are their parameters, as
    for any stage. Rows removed by ``reduce`` count as filtered by the stage
    ``<name>.reduce`` in the run's row accounting.
    """

    partitions: ClassVar[int] = 16

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        """One key per row: a ``uint64`` hash, or a binary digest of at least 8 bytes.

        A list of ``uint64`` keys per row sends the row to each key's
        partition, once per key (e.g. one LSH band bucket per band).
        """
        raise NotImplementedError(f"grouping stage {self.stage_name!r} does not implement key()")

    def shard_columns(self) -> list[str] | None:
        """The input columns written to the shards (None: every column).

        The reduce needs only these (with the key and source position): a
        stage whose rows go to several partitions should keep them few.
        """
        return None

    def reduce(self, rows: pa.Table) -> pa.RecordBatch | pa.Table | Reduced:
        """One partition's rows (sorted by source position) -> the rows to keep (and removed)."""
        raise NotImplementedError(f"grouping stage {self.stage_name!r} does not implement reduce()")

    def reduce_stream(
        self, shards: Iterator[pa.Table]
    ) -> Iterator[pa.RecordBatch | pa.Table | Reduced]:
        """One partition's shards, in source order, one at a time -> its output, piece by piece.

        The default gathers every shard and calls ``reduce`` once. A stage that
        can decide row by row in source order (exact dedup: the first row of
        each key) overrides this to hold one shard at a time (with what it
        must remember, e.g. the keys seen) instead of the whole partition.
        Each shard's rows are in source order; so are the shards.
        """
        rows = pa.concat_tables(list(shards), promote_options="default")
        yield self.reduce(rows.sort_by([(FILE, "ascending"), (ROW, "ascending")]))

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """A grouping stage has no per-batch ``process``: its sides run instead."""
        raise ConfigError(
            f"grouping stage {self.stage_name!r} runs as {self.stage_name}.map and "
            f"{self.stage_name}.reduce, never through process()"
        )


class GlobalStage(GroupingStage):
    """Base class of a global stage: one ``reduce`` over all of its input, once.

    A grouping stage with a single partition and no key: every row reaches
    one ``reduce`` call (in source order), e.g. connected components over
    every edge, or fitting a model. Its one partition's key is the hash of
    every input shard's digest, so it reruns when any of its input changed
    and is skipped otherwise. Its input must fit in one worker's memory.
    Subclasses set ``name`` and ``version`` and override ``reduce``.
    """

    partitions: ClassVar[int] = 1

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        """Every row in the one partition."""
        return pa.array(np.zeros(batch.num_rows, np.uint64))


class _Side(Stage):
    """One side of a grouping stage, as the executor runs it: a stage of its own."""

    side: ClassVar[str] = ""

    def __init__(self, grouping: GroupingStage) -> None:
        self.grouping = grouping

    @property
    def stage_name(self) -> str:
        """``<grouping stage>.map`` or ``<grouping stage>.reduce``."""
        return f"{self.grouping.stage_name}.{self.side}"

    def fingerprint_parts(self) -> dict[str, Any]:
        """The grouping stage's parts, with the side and the partition count."""
        parts = self.grouping.fingerprint_parts()
        return {**parts, "name": self.stage_name, "partitions": self.grouping.partitions}

    def params(self) -> dict[str, Any]:
        """The grouping stage's parameters."""
        return self.grouping.params()

    def setup(self) -> None:
        """The grouping stage's ``setup``."""
        self.grouping.setup()

    def teardown(self) -> None:
        """The grouping stage's ``teardown``."""
        self.grouping.teardown()


class MapSide(_Side):
    """The map side: splits each batch into shards by the key's partition."""

    side = MAP

    def fingerprint_parts(self) -> dict[str, Any]:
        """The grouping stage's parts, its code less the reduce: editing it reruns no map batch."""
        parts = super().fingerprint_parts()
        if parts.get("code") is not None:
            parts["code"] = code_digest(type(self.grouping), REDUCE_METHODS)
        return parts

    def split(self, batch: pa.RecordBatch, file: str, start: int) -> dict[int, pa.RecordBatch]:
        """The batch's rows, with key and source position columns, by partition.

        Args:
            batch: the input batch.
            file: the URL of the input file the batch came from.
            start: the batch's first row in that file (rows are numbered from
                it, in batch order: a total order of the file's rows).
        """
        n = batch.num_rows
        key = self.grouping.key(batch)
        if isinstance(key, pa.ChunkedArray):
            key = key.combine_chunks()
        if len(key) != n:
            raise ValueError(
                f"grouping stage {self.grouping.stage_name!r}: key() returned {len(key)} "
                f"values for {n} rows"
            )
        position = np.arange(start, start + n, dtype=np.int64)
        columns = self.grouping.shard_columns()
        rows = batch if columns is None else batch.select(columns)
        if pa.types.is_list(key.type) or pa.types.is_fixed_size_list(key.type):
            # Several keys per row: the row once per key, each with its own.
            of_row = np.asarray(pc.list_parent_indices(key))
            rows, position, key = rows.take(pa.array(of_row)), position[of_row], key.flatten()
        part = partition_of(key, self.grouping.partitions)
        rows = rows.append_column(KEY, key)
        rows = rows.append_column(FILE, repeated(file, len(position)))
        rows = rows.append_column(ROW, pa.array(position))
        # Rows grouped by partition, each partition's in batch order (a stable sort).
        order = np.argsort(part, kind="stable")
        rows, part = rows.take(pa.array(order)), part[order]
        cuts = np.flatnonzero(part[1:] != part[:-1]) + 1
        starts, stops = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(part)]])
        return {int(part[a]): rows.slice(a, b - a) for a, b in zip(starts, stops, strict=True)}

    @staticmethod
    def index(shards: dict[str, dict[str, Any]]) -> pa.RecordBatch:
        """The map batch's artifact: one row per shard (partition, digest, records, bytes)."""
        order = sorted(shards, key=int)
        return pa.RecordBatch.from_pydict(
            {
                "partition": pa.array([int(p) for p in order], pa.int32()),
                "digest": pa.array([shards[p]["digest"] for p in order], pa.string()),
                "records": pa.array([shards[p]["records"] for p in order], pa.int64()),
                "bytes": pa.array([shards[p]["bytes"] for p in order], pa.int64()),
            }
        )


class ReduceSide(_Side):
    """The reduce side: one partition's shards in, the kept (and removed) rows out."""

    side = REDUCE

    def reduce_shards(
        self, shards: Iterable[pa.Table]
    ) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
        """Run the grouping stage's reduce on the partition made of ``shards``; (kept, removed).

        ``shards`` come in source order (as their map batches do) and are
        read one at a time as ``reduce_stream`` asks for them.
        """
        kept: list[pa.RecordBatch] = []
        removed: list[pa.RecordBatch] = []
        for out in self.grouping.reduce_stream(iter(shards)):
            piece, gone = split_reduced(out)
            kept.append(piece)
            if gone is not None:
                removed.append(gone)
        if not kept:
            raise ValueError(f"grouping stage {self.grouping.stage_name!r}: reduce gave nothing")
        return _concat(kept), _concat(removed) if removed else None


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    tables = [pa.Table.from_batches([b]) for b in batches]
    return _one_batch(pa.concat_tables(tables, promote_options="default"))


def split_reduced(
    out: pa.RecordBatch | pa.Table | Reduced,
) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
    """What a reduce (or rejoin) returned as (kept, removed) batches, kept without ``_winnow_*``."""
    kept, removed = (out.kept, out.removed) if isinstance(out, Reduced) else (out, None)
    kept_batch = _one_batch(kept)
    internal = [i for i, f in enumerate(kept_batch.schema) if f.name.startswith(INTERNAL)]
    for i in reversed(internal):
        kept_batch = kept_batch.remove_column(i)
    return kept_batch, None if removed is None else _one_batch(removed)


def with_position(batch: pa.RecordBatch, file: str, start: int) -> pa.RecordBatch:
    """``batch`` with each row's source position: ``_winnow_file`` and ``_winnow_row``."""
    n = batch.num_rows
    rows = batch.append_column(FILE, repeated(file, n))
    return rows.append_column(ROW, pa.array(np.arange(start, start + n, dtype=np.int64)))


def repeated(text: str, n: int) -> pa.Array:
    """A string array of ``n`` times ``text``, built without a Python list."""
    data = text.encode()
    if len(data) * n >= 2**31:  # beyond 32-bit offsets: as pyarrow builds it
        return pa.array([text] * n, pa.string())
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def partition_of(key: pa.Array, partitions: int) -> np.ndarray:
    """Each row's partition from its key: a ``uint64``, or the first 8 bytes of a digest."""
    if pa.types.is_integer(key.type):
        values = np.asarray(pc.cast(key, pa.uint64(), safe=False).to_numpy(zero_copy_only=False))
    elif pa.types.is_fixed_size_binary(key.type) and key.type.byte_width >= 8:
        width = key.type.byte_width
        raw = np.frombuffer(key.buffers()[1], dtype=np.uint8)
        raw = raw[key.offset * width : (key.offset + len(key)) * width].reshape(-1, width)
        values = raw[:, :8].copy().view(">u8").reshape(-1)
    else:
        raise TypeError(
            f"a grouping key must be uint64 or fixed-size binary of 8+ bytes, not {key.type}"
        )
    return (values % np.uint64(partitions)).astype(np.int64)


def split_specs(specs: list[StageSpec]) -> tuple[list[StageSpec], list[StageSpec] | None]:
    """Split the stages at the first barrier: (the segment up to it, the stages from it on).

    At a grouping stage: (up to its map side, from its reduce side). At a
    rejoin stage (``winnow.rejoin``) other than the first: (up to the stage
    before it, from it). Without a barrier the stages come back whole, with
    None. Later barriers stay whole in the second list: each is split in
    turn when its segment is planned (``partitions.make_barrier``).

    Raises:
        ConfigError: a grouping stage with fewer than one partition.
    """
    at = [
        i
        for i, s in enumerate(specs)
        if isinstance(s.stage, GroupingStage) or (i > 0 and isinstance(s.stage, Rejoin))
    ]
    if not at:
        return specs, None
    i = at[0]
    if isinstance(specs[i].stage, Rejoin):
        return specs[:i], specs[i:]
    grouping = specs[i].stage
    assert isinstance(grouping, GroupingStage)
    if grouping.partitions < 1:
        raise ConfigError(f"grouping stage {grouping.stage_name!r}: partitions must be >= 1")
    if isinstance(grouping, GlobalStage) and grouping.partitions != 1:
        raise ConfigError(
            f"global stage {grouping.stage_name!r} has one partition; for {grouping.partitions} "
            "make it a GroupingStage with a key"
        )
    res = specs[i].resources
    before = [*specs[:i], StageSpec(MapSide(grouping), res)]
    return before, [StageSpec(ReduceSide(grouping), res), *specs[i + 1 :]]


def expand(specs: list[StageSpec]) -> list[StageSpec]:
    """Every stage as the executor runs it: each grouping stage as its map and reduce sides.

    Raises:
        ConfigError: a rejoin stage first (it has no stage before it to rejoin).
    """
    if specs and isinstance(specs[0].stage, Rejoin):
        raise ConfigError(
            f"rejoin stage {specs[0].name!r} is the pipeline's first stage: it rejoins the "
            "input with the output of the stage before it; put a grouping or global stage first"
        )
    out: list[StageSpec] = []
    rest: list[StageSpec] | None = specs
    while rest is not None:
        head, rest = split_specs(rest)
        out += head  # a rejoin starting ``rest`` starts a segment: no split there
    return out


def _one_batch(rows: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    if isinstance(rows, pa.RecordBatch):
        return rows
    batches = rows.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=rows.schema)
