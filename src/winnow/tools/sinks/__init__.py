"""Exactly-once, incremental export of a job's output into a table: Delta, Iceberg, Lance.

An export into a table is one commit of the table's own (atomic in each
library): data files are written first, every source artifact re-hashed as
it is read and the rows counted; the rows the staged commit adds (Delta:
each file read back; Iceberg: the new snapshot's summary; Lance: the
fragments) must equal them; then one commit makes them visible. A kill
or a failure before the commit leaves the table at its previous version
(data files no commit references stay behind, for the library's own
vacuum / orphan-file clean-up). The commit records, in the table's commit
metadata, a key derived from the job's output (:func:`export_key`: the
pipeline and its ordered artifact digests), the job and the digests it added
(:mod:`winnow.tools.sinks.history`). So exporting the same job again (or a
rerun whose output is the same) adds nothing, and exporting a later run of
the pipeline appends only the rows of batches whose artifact digest the
table does not hold yet. The table is append-only: rows of a batch a later
run changed stay, next to the new ones.

Refused, with nothing written: a table holding exports of another pipeline,
rows Winnow did not write (or deleted ones), a history whose older commits
were expired, or columns that differ from the job's output.

Two exports into one local table at once: the second stops with a usage
error (a lock file beside the table, :func:`targets.table_lock`), since
each library would accept both appends. A table in a configured Iceberg
catalog (``--catalog``) is not locked: run one export into it at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pyarrow as pa

from winnow.errors import IntegrityError, UsageError
from winnow.storage.manifests import manifest_entries, read_manifest
from winnow.storage.state import State
from winnow.tools.export import Sources, refuse_protected
from winnow.tools.export_file import conform
from winnow.tools.sinks.history import TableCommit, TableHistory, export_key

PAUSE_ENV = "WINNOW_EXPORT_PAUSE_BEFORE_COMMIT"  # tests: a file to create, then wait to be killed

Tables = Callable[[pa.Schema], Iterator[pa.Table]]
Ready = Callable[[int], None]


class Sink(Protocol):
    """One table format's side of an export: read the table, append to it in one commit."""

    where: str  # the table, for messages: "Delta table /data/t"

    def exists(self) -> bool:
        """Whether the table exists."""

    def location(self) -> str:
        """Where the existing table is: its folder, or an Iceberg table's location URL."""

    def schema(self) -> pa.Schema:
        """The existing table's schema, as Arrow."""

    def rows(self) -> int:
        """How many rows the existing table holds."""

    def history(self) -> list[TableCommit]:
        """Winnow's commits in the table's current lineage, oldest first."""

    def append(
        self,
        source: pa.Schema,
        tables: Tables,
        properties: dict[str, str],
        ready: Ready,
    ) -> None:
        """Write data files, call ``ready()``, then commit them once.

        The files hold ``tables(schema)``: the rows conformed to the table's
        schema, or to that of the new table made from ``source``; the commit
        carries ``properties`` as its metadata.
        """


def export_table(
    state: State,
    job_id: str,
    to: str | None,
    fmt: str,
    storage_options: dict[str, Any] | None = None,
    *,
    table: str | None = None,
    catalog: str | None = None,
) -> dict[str, Any]:
    """Append a job's output to a Delta, Iceberg or Lance table, once, in one commit.

    Args:
        state: the state holding the job's record.
        job_id: the job whose run manifest lists what to export.
        to: Delta and Lance: the table's path. Iceberg: a folder holding a
            SQLite catalog (``catalog.db``) and its ``warehouse``, both made on
            first use; ``None`` with ``catalog``.
        fmt: ``delta``, ``iceberg`` or ``lance``.
        storage_options: for the artifact stores and the manifest.
        table: Iceberg: ``namespace.name`` (default ``winnow.<pipeline>``).
        catalog: Iceberg: the name of a catalog configured the pyiceberg way
            (``~/.pyiceberg.yaml`` or ``PYICEBERG_CATALOG__<NAME>__*``).

    Returns:
        ``job_id``, ``to``, ``format``, ``table`` (where), ``key``, ``committed``
        (False when there was nothing to add), ``version`` (the commit that holds
        the job's rows: this one, or the earlier one that exported the same
        output; None when nothing was added), ``rows`` and ``batches`` added,
        ``batches_held`` (already in the table), ``table_rows`` after,
        ``missing_batches`` (batches of the job without output) and
        ``location`` (the table's folder or Iceberg location, as lineage names it).

    Raises:
        UsageError: bad target, a missing extra, or a table that cannot take
            this job's rows (see the module's docstring); nothing was written.
        IntegrityError: a source artifact does not verify; nothing was committed.
    """
    from winnow.tools.sinks.targets import open_sink, table_lock

    record = state.read_job(job_id)
    if not record.get("manifest"):
        raise UsageError(f"job {job_id} has no output manifest (status {record.get('status')})")
    manifest = read_manifest(record["manifest"], storage_options)
    entries = manifest_entries(manifest)
    pipeline = str(manifest.get("pipeline") or record.get("pipeline"))
    everything = Sources(entries, storage_options, f"export of {job_id}")
    if to is not None:
        refuse_protected(to, state, record, everything, storage_options)

    def reopen() -> Sink:
        return open_sink(fmt, to, storage_options, table=table, catalog=catalog, pipeline=pipeline)

    result: dict[str, Any] = {
        "job_id": job_id, "to": to, "format": fmt, "committed": False, "version": None,
        "rows": 0, "batches": 0, "missing_batches": len(manifest["batches"]) - len(entries),
    }  # fmt: skip
    reopen()  # a missing extra or a target that is not a table stops here, before the lock
    with table_lock(to if catalog is None else None, storage_options, fmt):
        result.update(_export_into(reopen, entries, everything, job_id, pipeline))
    return result


def _export_into(
    reopen: Callable[[], Sink],
    entries: list[dict[str, Any]],
    everything: Sources,
    job_id: str,
    pipeline: str,
) -> dict[str, Any]:
    """Under the table's lock: what the table holds, then the one commit of the rest."""
    sink = reopen()
    digests = [ref.digest for ref in everything.refs]
    key = export_key(pipeline, digests)
    history = TableHistory(sink.history() if sink.exists() else [], sink.where)
    history.check(pipeline, sink.rows() if sink.exists() else 0)
    result: dict[str, Any] = {"table": sink.where, "key": key, "batches_held": len(digests)}
    done = history.find(key)
    new = [] if done else history.new_indices(digests)
    added = Sources(
        [entries[i] for i in new], everything.options, f"export of {job_id} to {sink.where}"
    )
    if done or (sink.exists() and added.records == 0):
        return {
            **result, "version": done.version if done else None, "table_rows": sink.rows(),
            "location": sink.location(),
        }  # fmt: skip
    source = everything.schema()
    if sink.exists():
        _check_columns(source, sink.schema(), sink.where)
    elif not len(source):
        raise UsageError(
            f"job {job_id} has no output batches, so no columns to make {sink.where} "
            "from; nothing was written. Fix: export a job with output"
        )
    commit = TableCommit(
        version="", key=key, job_id=job_id, pipeline=pipeline,
        artifacts=tuple(digests[i] for i in new),
        artifacts_total=history.artifacts_total + len(new), rows=added.records,
    )  # fmt: skip
    _append(sink, added, source, commit)
    after = reopen()
    mine = TableHistory(after.history(), after.where).find(key)
    return {
        **result, "committed": True, "version": mine.version if mine else None,
        "rows": added.records, "batches": len(new), "batches_held": len(digests) - len(new),
        "table_rows": after.rows(), "location": after.location(),
    }  # fmt: skip


def _append(sink: Sink, added: Sources, source: pa.Schema, commit: TableCommit) -> None:
    """Stream the verified new batches into ``sink``; check the count before the commit."""
    streamed, failed = [0], []

    def tables(schema: pa.Schema) -> Iterator[pa.Table]:
        try:
            for table in added.tables():  # each artifact re-hashed against its checkpoint
                streamed[0] += table.num_rows
                yield conform(table, schema)
        except Exception as exc:  # Lance's writer hands it back wrapped in its own OSError
            failed.append(exc)
            raise

    def ready(staged: int) -> None:
        if not streamed[0] == staged == added.records:
            raise IntegrityError(
                f"{added.what} streamed {streamed[0]} rows and staged files of {staged}; the "
                f"manifest's artifacts hold {added.records}; nothing was committed. Run "
                "`winnow verify --full`, then the export again"
            )
        _pause_if_asked()

    try:
        sink.append(source, tables, commit.properties(), ready)
    except Exception:
        if failed:
            raise failed[0] from None
        raise


def _pause_if_asked() -> None:
    """Tests: the data files are written, the commit is next; say so and wait to be killed."""
    flag = os.environ.get(PAUSE_ENV)
    if not flag:
        return
    with open(flag, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)


def _check_columns(ours: pa.Schema, table: pa.Schema, where: str) -> None:
    """Refuse a table whose columns differ from the job's output in name or kind of type."""
    mine = {f.name: _kind(f.type) for f in ours}
    theirs = {f.name: _kind(f.type) for f in table}
    if mine == theirs:
        return
    diffs = [
        f"{name}: table {theirs.get(name, 'absent')}, job {mine.get(name, 'absent')}"
        for name in sorted(mine.keys() | theirs.keys())
        if mine.get(name) != theirs.get(name)
    ]
    raise UsageError(
        f"{where} has other columns than the job's output ({'; '.join(diffs[:4])}); "
        "nothing was written. Fix: export to a new table, or make the pipeline's output "
        "match the table"
    )


def _kind(t: pa.DataType) -> str:
    """A type with what the table formats store differently taken out (sizes, views, units)."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if isinstance(t, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)):
        return f"list<{_kind(t.value_type)}>"
    if isinstance(t, pa.StructType):
        return "struct<" + ", ".join(f"{f.name}: {_kind(f.type)}" for f in t) + ">"
    if isinstance(t, pa.MapType):
        return f"map<{_kind(t.key_type)}, {_kind(t.item_type)}>"
    if isinstance(t, pa.TimestampType):
        return f"timestamp[{t.tz}]"
    return str(t)
