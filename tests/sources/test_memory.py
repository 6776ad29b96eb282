"""Data in memory as a run's input: committed as content-addressed chunks, resumable like files."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import winnow
from winnow import Pipeline, Stage
from winnow.errors import InputError, UsageError
from winnow.gateway.queue import enqueue
from winnow.sources import discover, memory
from winnow.storage import formats
from winnow.storage.artifacts import ArtifactStore

ROWS = 10  # batch_rows of every run here: 45 rows make 5 chunks, the last of 5 rows
SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


@dataclass
class Upper(Stage):
    """Uppercases ``text``."""

    name = "upper"
    version = "1"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        text = pc.utf8_upper(batch.column("text"))
        return batch.set_column(batch.schema.get_field_index("text"), "text", text)


@dataclass
class Even(Stage):
    """Keeps the rows with an even ``id`` (a filter: row accounting must show the rest)."""

    name = "even"
    version = "1"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pc.equal(pc.bit_wise_and(batch.column("id"), 1), 0))


PIPELINE = Pipeline(name="memory", stages=[Upper(), Even()], schema=SCHEMA)


def table(n: int = 45, changed: int | None = None) -> pa.Table:
    """``n`` rows ``id``, ``text``; row ``changed`` (if any) has other text."""
    texts = [f"row {i}" if i != changed else "changed" for i in range(n)]
    return pa.table({"id": pa.array(range(n), pa.int64()), "text": texts}, schema=SCHEMA)


def expected(data: pa.Table) -> pa.Table:
    """What the pipeline makes of ``data``, computed here without Winnow."""
    upper = data.set_column(1, "text", pc.utf8_upper(data.column("text")))
    return upper.filter(pc.equal(pc.bit_wise_and(upper.column("id"), 1), 0))


def run(where: Path, data: Any, **kwargs: Any) -> winnow.RunResult:
    options = {"executor": "local", **kwargs}
    return winnow.run(
        PIPELINE,
        input=data,
        state=str(where / "state"),
        output=str(where / "out"),
        sets=[f"batch_rows={ROWS}"],
        **options,
    )


def runs(result: winnow.RunResult) -> dict[str, tuple[int, int]]:
    """Per stage: batches run, batches skipped."""
    return {name: (c.run, c.skipped) for name, c in result.counts.items()}


def store(where: Path) -> ArtifactStore:
    return ArtifactStore(str(where / "out" / "artifacts"))


def as_pandas(data: pa.Table) -> pd.DataFrame:
    return data.to_pandas()


def as_hf(data: pa.Table) -> Any:
    import datasets

    return datasets.Dataset(datasets.table.InMemoryTable(data))


# -- chunks ------------------------------------------------------------------


def test_chunks_are_cut_by_rows_not_by_how_memory_holds_them():
    data = table()
    relaid = pa.concat_tables([data.slice(0, 3), data.slice(3, 20), data.slice(23)])
    assert relaid.column("id").num_chunks == 3
    digests = []
    for each in (data, relaid, as_hf(data)):
        cut = list(memory.chunks(each, ROWS))
        assert [b.num_rows for b in cut] == [10, 10, 10, 10, 5]
        assert pa.Table.from_batches(cut).column("id").to_pylist() == list(range(45))
        digests.append([hashlib.sha256(formats.serialize(b, "ipc")).hexdigest() for b in cut])
    assert digests[0] == digests[1] == digests[2]  # equal rows, equal bytes
    frame = list(memory.chunks(as_pandas(data), ROWS))  # pandas: the frame's own text type
    assert [b.num_rows for b in frame] == [10, 10, 10, 10, 5]
    assert pa.Table.from_batches(frame).cast(SCHEMA).equals(data)


def test_a_dictionary_columns_chunks_hold_only_their_own_values():
    # A dictionary column (a pandas categorical) sliced keeps its whole dictionary: one
    # new value in the last chunk changed every chunk's bytes, so every batch reran.
    def digests(data: Any) -> list[str]:
        cut = list(memory.chunks(data, ROWS))
        return [hashlib.sha256(formats.serialize(b, "ipc")).hexdigest() for b in cut]

    texts = [f"kind {i % 3}" for i in range(45)]
    for as_data in (
        lambda t: pa.table({"id": range(45), "text": pa.array(t).dictionary_encode()}),
        lambda t: pd.DataFrame({"id": range(45), "text": pd.Categorical(t, ordered=True)}),
    ):
        before, after = digests(as_data(texts)), digests(as_data([*texts[:44], "new"]))
        assert before[:4] == after[:4] and before[4] != after[4]
    kept = next(memory.chunks(pd.DataFrame({"c": pd.Categorical(["b", "a"], ["c", "b", "a"])}), 5))
    column = kept.column("c")
    assert column.type.ordered is False and column.dictionary.to_pylist() == ["b", "a"]
    assert column.to_pylist() == ["b", "a"]


def test_rows_without_columns_are_refused_naming_the_input(tmp_path: Path):
    with pytest.raises(InputError, match=r"pyarrow\.Table has rows but no columns"):
        run(tmp_path, table().select([]))
    assert store(tmp_path).files() == []


def test_a_pandas_frame_is_converted_with_the_whole_frames_types():
    # The second chunk alone holds only None in "score": on its own it would be typed null.
    frame = pd.DataFrame({"id": range(20), "score": [1.5] * 10 + [None] * 10})
    cut = list(memory.chunks(frame, ROWS))
    assert [b.schema.field("score").type for b in cut] == [pa.float64(), pa.float64()]


# -- each kind of input, end to end ----------------------------------------


def as_reader(data: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=7))


def as_hf_streaming(data: pa.Table) -> Any:
    return as_hf(data).to_iterable_dataset(num_shards=2)


KINDS = {
    "arrow": lambda t: t,
    "arrow-reader": as_reader,
    "pandas": as_pandas,
    "hf": as_hf,
    "hf-iterable": as_hf_streaming,
}


@pytest.mark.parametrize("kind", KINDS)
def test_an_input_in_memory_runs_reruns_and_reruns_only_a_changed_slice(tmp_path: Path, kind: str):
    convert = KINDS[kind]
    first = run(tmp_path, convert(table()))
    assert first.ok and runs(first) == {"upper": (5, 0), "even": (5, 0)}
    assert first.rows_in == 45 and first.rows_out == 23
    assert first.to_arrow().cast(SCHEMA).equals(expected(table()))  # in row order
    # Each chunk is an input of its own, named by its position.
    assert first.record["inputs"] == [f"inmemory://chunk-{i:06d}" for i in range(5)]
    accounting = first.record["accounting"]  # every row accounted for, chunk by chunk
    assert accounting["total"]["read"] == 45 and accounting["total"]["unaccounted"] == 0
    assert accounting["total"]["filtered_by_stage"] == {"even": 22}
    assert {url: rows["read"] for url, rows in accounting["files"].items()} == {
        f"inmemory://chunk-{i:06d}": 5 if i == 4 else 10 for i in range(5)
    }

    again = run(tmp_path, convert(table()))  # equal data, a new object
    assert again.ok and runs(again) == {"upper": (0, 5), "even": (0, 5)}
    assert again.to_arrow().equals(first.to_arrow())

    changed = run(tmp_path, convert(table(changed=24)))  # row 24: the third chunk
    assert changed.ok and runs(changed) == {"upper": (1, 4), "even": (1, 4)}
    out = changed.to_arrow().cast(SCHEMA)
    assert out.equals(expected(table(changed=24)))
    assert "CHANGED" in out.column("text").to_pylist()


def test_a_hugging_face_selection_is_run_in_its_own_order(tmp_path: Path):
    picked = as_hf(table()).select([40, 7, 2, 3])  # an indices mapping over the table
    result = run(tmp_path, picked)
    assert result.to_arrow().column("id").to_pylist() == [40, 2]
    assert result.rows_in == 4


def test_a_changed_slice_is_named_as_the_cause(tmp_path: Path):
    run(tmp_path, table())
    session = winnow.resolve_session(
        winnow.RunRequest(
            PIPELINE,
            state=str(tmp_path / "state"),
            output=str(tmp_path / "out"),
            sets=(f"batch_rows={ROWS}",),
            data=table(changed=3),
        )
    )
    plan = winnow.plan(session).to_dict()
    assert plan["stages"][0]["run"] == 1
    assert plan["stages"][0]["reasons"] == {"committed": 4, "input file changed": 1}


def test_equal_chunks_at_two_places_are_two_inputs_sharing_an_artifact(tmp_path: Path):
    twice = pa.concat_tables([table(10), table(10)])  # chunk 0 == chunk 1
    result = run(tmp_path, twice)
    assert result.ok and result.rows_in == 20 and result.rows_out == 10
    assert result.record["accounting"]["total"]["read"] == 20
    assert result.to_arrow().column("id").to_pylist() == [0, 2, 4, 6, 8] * 2
    inputs = [f for f in store(tmp_path).files() if f.path.endswith(".arrow")]
    assert len(inputs) == 1  # one input artifact for both chunks


def test_input_chunks_are_verified_artifacts(tmp_path: Path):
    files = memory.commit(table(), store(tmp_path), ROWS, SCHEMA)
    assert [f.url for f in files] == [memory.chunk_name(i) for i in range(5)]
    for f in files:
        data = Path(f.read_url).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert f.version == f"sha256={digest}" and f.size == len(data)
        assert Path(f.read_url).name.startswith(digest)


# -- a Ray Dataset: streamed, never collected on the driver ------------------


@pytest.mark.slow
def test_a_ray_dataset_is_committed_one_chunk_at_a_time(tmp_path: Path, local_ray):
    import ray

    # Five blocks computed by Ray tasks (so their order is Ray's to keep), 45 rows.
    dataset = (
        ray.data.from_arrow(table()).repartition(5).map_batches(lambda b: b, batch_format="pyarrow")
    )
    chunks = memory.commit_chunks(dataset, store(tmp_path), ROWS, SCHEMA)
    first = next(chunks)
    # The first chunk is committed before the next is asked for: one input
    # artifact now, though the dataset holds five chunks' rows.
    assert first.url == memory.chunk_name(0)
    assert len(store(tmp_path).files()) == 1
    # While it is read, the dataset keeps its order (so chunks are cut the same each run).
    assert dataset.context.execution_options.preserve_order is True
    rest = list(chunks)
    assert len(rest) == 4 and len(store(tmp_path).files()) == 5
    assert dataset.context.execution_options.preserve_order is False  # restored

    # Run by stage actors on Ray: its reader actors read the chunks from their artifacts.
    result = run(tmp_path, dataset, executor="ray")
    assert result.ok and runs(result) == {"upper": (5, 0), "even": (5, 0)}
    assert result.to_arrow().equals(expected(table()))  # in the dataset's order
    again = run(tmp_path, ray.data.from_arrow(table()))  # equal rows, other blocks
    assert runs(again) == {"upper": (0, 5), "even": (0, 5)}
    changed = run(tmp_path, ray.data.from_arrow(table(changed=44)))
    assert runs(changed) == {"upper": (1, 4), "even": (1, 4)}


# -- bad input -----------------------------------------------------------------


def test_an_unsupported_object_is_refused_naming_what_is_taken(tmp_path: Path):
    with pytest.raises(UsageError, match=r"input is a builtins\.list.*pyarrow\.Table"):
        run(tmp_path, [{"id": 1, "text": "a"}])
    import datasets

    splits = datasets.DatasetDict({"train": as_hf(table()), "test": as_hf(table())})
    with pytest.raises(UsageError, match=r"DatasetDict of splits train, test.*dataset\['train'\]"):
        run(tmp_path, splits)
    assert not (tmp_path / "out").exists()


def test_an_empty_input_is_refused(tmp_path: Path):
    for empty in (table(0), as_pandas(table(0))):
        with pytest.raises(InputError, match="has no rows"):
            run(tmp_path, empty)
    reader = pa.RecordBatchReader.from_batches(SCHEMA, table(0).to_batches())
    with pytest.raises(InputError, match=r"has no rows \(a reader is read once"):
        run(tmp_path, reader)  # passed again after a run read it, it reads as empty
    assert store(tmp_path).files() == []


def test_columns_that_do_not_fit_the_pipeline_are_refused_before_any_write(tmp_path: Path):
    renamed = table().rename_columns(["id", "body"])
    with pytest.raises(
        InputError, match="does not match the pipeline's schema: missing columns text"
    ):
        run(tmp_path, renamed)
    wrong = pa.table({"id": [[1]] * 3, "text": ["a"] * 3})
    with pytest.raises(InputError, match=r"id \(list<item: int64> cannot be cast to int64\)"):
        run(tmp_path, as_pandas(wrong))
    assert store(tmp_path).files() == []


def test_input_data_and_input_files_together_are_refused(tmp_path: Path):
    with pytest.raises(UsageError, match="not both"):
        run(tmp_path, table(), inputs=[str(tmp_path / "x.jsonl")])


def test_a_run_over_data_in_memory_cannot_be_queued_or_retried_from_its_record(tmp_path: Path):
    request = winnow.RunRequest(PIPELINE, data=table())
    with pytest.raises(UsageError, match="cannot be queued or submitted"):
        request.to_dict()
    with pytest.raises(UsageError, match="cannot be queued or submitted"):
        request.run_args()
    with pytest.raises(UsageError, match="cannot be queued or submitted"):
        enqueue(request.but(state=str(tmp_path / "state"), output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
    # What `winnow retry` finds in such a job's record: names no file holds.
    with pytest.raises(InputError, match=r"'inmemory://chunk-000000' was a chunk of data passed"):
        discover([memory.chunk_name(0)])


def test_gc_keeps_a_live_runs_input_chunks_and_lets_a_finished_runs_go(tmp_path: Path):
    result = run(tmp_path, table())
    chunks = {Path(uri).name for uri in result.record["input_chunks"].values()}
    assert len(chunks) == 5 and set(result.record["input_chunks"]) == set(result.record["inputs"])
    state = winnow.open_state(str(tmp_path / "state"))

    def unreferenced() -> set[str]:
        found = winnow.gc(state, grace_s=0)
        return {Path(c["path"]).name for c in found["candidates"] if c["kind"] == "unreferenced"}

    assert unreferenced() == chunks  # a finished run's inputs only: its outputs are referenced
    live = {**result.record, "job_id": "memory-live", "status": "RUNNING"}
    state.write_job({**live, "pid": os.getpid(), "host": socket.gethostname()})
    assert unreferenced() == set()  # a live run may still read them, however old they are
