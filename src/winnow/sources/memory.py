"""Data in memory as a run's input: committed as content-addressed chunks first.

``winnow.run(pipeline, input=data)`` takes a ``pyarrow.Table`` (or a
``RecordBatchReader``, read once as a stream), a ``pandas.DataFrame``, a ``ray.data.Dataset`` or a Hugging Face
``datasets.Dataset`` (or a streaming ``IterableDataset``). Its rows are cut, in order, into chunks of the
profile's ``batch_rows``; each chunk is written to the run's artifact store
as an Arrow IPC artifact named by its SHA-256 (written, read back, verified,
published, like any artifact) and becomes one input "file" of the run:
named ``inmemory://chunk-<n>`` (what status, inspect and the manifest show),
read from its artifact, with the chunk's digest as its version.

So a chunk's identity is its position and its content: a rerun over equal
data skips every batch; a changed row reruns only its chunk's batches (rows
inserted or removed shift every later chunk, which then reruns too). Equal
chunks at two positions are two inputs (their rows are counted twice) that
share one artifact.

Nothing is collected whole: a table is sliced, a DataFrame converted one
chunk at a time (against the schema of the whole frame), a Ray Dataset
streamed with ``iter_batches`` in its own order, a Hugging Face dataset read
as Arrow tables; at most one chunk is held here at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from winnow import extras
from winnow.errors import InputError, UsageError
from winnow.sources import conform
from winnow.sources.discover import MEMORY_PREFIX, SourceFile
from winnow.storage.artifacts import ArtifactStore

FORMAT = "ipc"  # an input chunk's artifact format: Arrow, read back without conversion
KINDS = (
    "a pyarrow.Table (or RecordBatchReader), pandas.DataFrame, ray.data.Dataset or "
    "Hugging Face datasets.Dataset (or IterableDataset)"
)


def chunk_name(index: int) -> str:
    """The input name of chunk ``index`` (from 0): ``inmemory://chunk-000003``."""
    return f"{MEMORY_PREFIX}chunk-{index:06d}"


def describe(data: Any) -> str:
    """What ``data`` is, as an error names it (``pandas.DataFrame``).

    Raises:
        UsageError: ``data`` is no kind of input ``winnow.run`` takes.
    """
    kind = type(data)
    module = kind.__module__.split(".")[0]
    if isinstance(data, pa.Table):
        return "pyarrow.Table"
    if isinstance(data, pa.RecordBatchReader):
        return "pyarrow.RecordBatchReader"
    if module == "pandas" and kind.__name__ == "DataFrame":
        return "pandas.DataFrame"
    if kind.__module__.startswith("ray.data") and hasattr(data, "context"):
        return "ray.data.Dataset"
    if module == "datasets" and kind.__name__ in ("Dataset", "IterableDataset"):
        return f"datasets.{kind.__name__}"
    if module == "datasets" and kind.__name__ in ("DatasetDict", "IterableDatasetDict"):
        raise UsageError(
            f"input is a Hugging Face {kind.__name__} of splits {', '.join(data)}: "
            "pass one split, e.g. input=dataset['train']"
        )
    raise UsageError(
        f"input is a {kind.__module__}.{kind.__qualname__}; winnow.run(pipeline, input=...) "
        f"takes {KINDS}. Convert it to one of those, or write it to files and pass inputs=[...]"
    )


def commit(
    data: Any, store: ArtifactStore, batch_rows: int, schema: pa.Schema | None = None
) -> list[SourceFile]:
    """Commit ``data`` as input chunks in ``store``; the run's input files, in row order.

    Args:
        data: the input (see :data:`KINDS`).
        store: the run's artifact store.
        batch_rows: rows per chunk (the profile's batch size).
        schema: the pipeline's schema, which every chunk must fit.

    Raises:
        UsageError: ``data`` is of a kind not taken (nothing is written).
        InputError: it has no rows, or columns that do not fit ``schema`` or
            change partway (nothing past the last good chunk is written).
    """
    files = list(commit_chunks(data, store, batch_rows, schema))
    if not files:
        what = describe(data)
        once = (
            " (a reader is read once: one read already, by an earlier run too, has none left)"
            if what == "pyarrow.RecordBatchReader"
            else ""
        )
        raise InputError(
            f"the input {what} has no rows{once}: there is nothing to run; "
            "pass data with at least one row"
        )
    return files


def commit_chunks(
    data: Any, store: ArtifactStore, batch_rows: int, schema: pa.Schema | None = None
) -> Iterator[SourceFile]:
    """Commit ``data`` chunk by chunk, yielding each chunk's input file once it is verified.

    What :func:`commit` does, one chunk at a time: the next chunk is not read
    before this one is committed and yielded.
    """
    what = describe(data)
    first: pa.Schema | None = None
    for index, batch in enumerate(chunks(data, batch_rows)):
        first = _check(what, index, batch, batch_rows, schema, first)
        ref = store.put(batch, FORMAT)
        yield SourceFile(
            url=chunk_name(index),
            format=FORMAT,
            compression=None,
            size=ref.bytes,
            version=f"sha256={ref.digest}",
            location=ref.uri,
        )


def _check(
    what: str,
    index: int,
    batch: pa.RecordBatch,
    batch_rows: int,
    schema: pa.Schema | None,
    first: pa.Schema | None,
) -> pa.Schema:
    """Refuse a chunk whose columns do not fit ``schema`` or differ from the first chunk's."""
    if schema is not None:
        found = conform.problem(batch.schema, schema)
        if found:
            raise InputError(
                f"the input {what} does not match the pipeline's schema: {found}. "
                "Fix the data's columns (rename, cast) or the pipeline's schema"
            )
    elif first is not None and not batch.schema.equals(first):
        start = index * batch_rows
        raise InputError(
            f"the input {what} changes its columns at row {start}: [{_columns(batch.schema)}] "
            f"where its first rows had [{_columns(first)}]; give every row the same columns "
            "(or give the pipeline a schema to cast them to)"
        )
    return first if first is not None else batch.schema


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def chunks(data: Any, rows: int) -> Iterator[pa.RecordBatch]:
    """``data``'s rows in order, as record batches of exactly ``rows`` (the last: fewer).

    Where the cuts fall depends on the rows alone, never on how ``data`` is
    laid out in memory (its chunks, blocks or partitions).
    """
    return rechunk(tables(data, rows), rows, describe(data))


def tables(data: Any, rows: int) -> Iterator[pa.Table]:
    """``data``'s rows in order, as Arrow tables of about ``rows`` rows each."""
    what = describe(data)
    if what == "pyarrow.Table":
        return _slices(data, rows)
    if what == "pyarrow.RecordBatchReader":  # a stream, read once, batch by batch
        return (pa.Table.from_batches([batch]) for batch in data)
    if what == "pandas.DataFrame":
        return _pandas(data, rows)
    if what == "ray.data.Dataset":
        return _ray(data, rows)
    return _hugging_face(data, rows)


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def _pandas(frame: Any, rows: int) -> Iterator[pa.Table]:
    """A DataFrame one slice at a time, each converted with the whole frame's schema.

    A slice alone could infer another type (a column all None in it). The
    index is not kept: ``frame.reset_index()`` first to keep it as a column.
    """
    try:
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        for start in range(0, len(frame), rows):
            part = frame.iloc[start : start + rows]
            yield pa.Table.from_pandas(part, schema=schema, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(
            f"the input pandas.DataFrame cannot be converted to Arrow ({type(exc).__name__}: "
            f"{exc}); give each column one type (and string column names)"
        ) from None


def _ray(dataset: Any, rows: int) -> Iterator[pa.Table]:
    """A Ray Dataset streamed in its own order, one batch at a time.

    Its blocks are computed by Ray as usual; only the batch being committed
    is held here. Ray Data may hand blocks over out of order, which would cut
    the rows differently from run to run: the dataset's own context keeps
    the order while it is read, and is restored after.
    """
    options = dataset.context.execution_options
    kept = options.preserve_order
    options.preserve_order = True
    try:
        yield from dataset.iter_batches(batch_size=rows, batch_format="pyarrow")
    finally:
        options.preserve_order = kept


def _hugging_face(dataset: Any, rows: int) -> Iterator[pa.Table]:
    """A Hugging Face dataset as Arrow tables, its selection and order kept.

    A ``Dataset`` is sliced from its Arrow table; an ``IterableDataset``
    (streaming) gives its examples as Arrow tables as it reads them.
    """
    extras.require("datasets", "a Hugging Face dataset input")
    yield from dataset.with_format("arrow").iter(batch_size=rows)


def rechunk(tables: Iterable[pa.Table], rows: int, what: str) -> Iterator[pa.RecordBatch]:
    """Cut a stream of tables into record batches of exactly ``rows`` rows (the last: fewer)."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        while table.num_rows:
            take = min(rows - count, table.num_rows)
            held.append(table.slice(0, take))
            count += take
            table = table.slice(take)
            if count == rows:
                yield _one_batch(held, what)
                held, count = [], 0
    if count:
        yield _one_batch(held, what)


def _one_batch(parts: list[pa.Table], what: str) -> pa.RecordBatch:
    """One record batch of these parts' rows, laid out afresh.

    ``take`` copies every column into new, compact buffers (no slice offsets,
    no leftover bytes, a validity bitmap only where there are nulls), so equal
    rows serialize to equal bytes however the input held them. It keeps a
    dictionary column's whole dictionary, though, which would make a chunk's
    bytes depend on values in other chunks: those are cut to the values used.
    """
    try:
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"the input {what} changes its columns partway ({exc}); give every row the same columns"
        ) from None
    if table.num_columns == 0:
        raise InputError(
            f"the input {what} has rows but no columns: give it the pipeline's columns"
        )
    table = table.take(pa.array(range(table.num_rows), pa.int64())).combine_chunks()
    columns = [_used_values(column.chunk(0)) for column in table.columns]
    return pa.RecordBatch.from_arrays(columns, schema=table.schema)


def _used_values(column: pa.Array) -> pa.Array:
    """A dictionary column with only the dictionary values its rows use, in their order.

    Keeping the dictionary's order (not the rows' order) keeps an ordered
    dictionary's (a pandas ordered categorical's) meaning; any other column
    is returned as it is.
    """
    if not pa.types.is_dictionary(column.type):
        return column
    used = pc.unique(column.indices).drop_null().sort()
    indices = pc.index_in(column.indices, value_set=used).cast(column.type.index_type)
    return pa.DictionaryArray.from_arrays(
        indices, column.dictionary.take(used), ordered=column.type.ordered
    )
