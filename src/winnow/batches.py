"""A run's source batches: the input files split into keyed row ranges.

Each file's row count (and Parquet row groups) is cached in the state's
source index, so a rerun splits without reading its inputs again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from winnow import sources
from winnow.pipeline import Pipeline
from winnow.profile import Profile
from winnow.storage.state import State

T = TypeVar("T")
R = TypeVar("R")


def source_batches(
    files: list[sources.SourceFile], state: State, profile: Profile, pipeline: Pipeline
) -> list[sources.SourceBatch]:
    """Split files into batches, caching each file's row count (and row groups) in the state.

    A file whose columns are known up front (Parquet, IPC, a CSV header) is
    checked against the pipeline's schema once per schema: the source index
    records which reader it was checked for. Nothing is cached until every
    file passed, so bad input writes nothing.

    An index written before row groups were recorded lacks ``row_group_rows``:
    its file is read as one stream, which is always correct.
    """
    reader_fp = sources.reader_fingerprint(pipeline.schema, profile.on_bad_record)
    index = {f.identity: state.source_index(f.identity) for f in files}
    missing = [f for f in files if index[f.identity] is None]
    unchecked = [
        f
        for f in files
        if (entry := index[f.identity]) is not None
        and pipeline.schema is not None
        and f.format != "jsonl"
        and entry.get("schema_checked") != reader_fp
    ]

    def stats(f: sources.SourceFile) -> tuple[sources.SourceFile, dict[str, Any]]:
        return f, sources.file_stats(f, profile.storage_options, pipeline.schema)

    def check(f: sources.SourceFile) -> sources.SourceFile:
        sources.check_schema(f, pipeline.schema, profile.storage_options)
        return f

    for f, found in map_threads(stats, missing, 4):
        index[f.identity] = {"url": f.url, **found, "schema_checked": reader_fp}
    map_threads(check, unchecked, 4)

    def write(f: sources.SourceFile) -> None:
        entry = {**(index[f.identity] or {}), "schema_checked": reader_fp}
        state.write_source_index(f.identity, entry)

    # On threads: each entry is its own fsynced file, and 10,000 fsyncs one after
    # another took 40 s of a first plan over 10,000 small files.
    map_threads(write, [*missing, *unchecked], 16)
    out = []
    for f in files:
        out.extend(sources.split(f, index[f.identity] or {}, profile.batch_rows, reader_fp))
    return out


def map_threads(fn: Callable[[T], R], items: list[T], workers: int) -> list[R]:
    """``fn`` over ``items`` on threads.

    An interrupt returns at once, not after the running calls (a read of a huge
    or stalled input) finish.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
