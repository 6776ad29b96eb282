"""``winnow inspect quarantine``: the bad records set aside by every committed batch."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from winnow.errors import IntegrityError
from winnow.records import BatchStatus
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.state import State

MARKER = "_winnow_export.json"  # a folder export's completion marker, written last
_PART = re.compile(r"part-\d{5}\.(parquet|jsonl)")
_CHUNK = 8 << 20


def quarantined(
    state: State, limit: int | None = None, storage_options: dict[str, Any] | None = None
) -> pa.Table:
    """Quarantined bad records (file, row, error, raw line) of every committed batch.

    Raises:
        IntegrityError: a quarantine artifact is missing or damaged; the message
            names stage and batch, and the fix (``winnow verify --full`` marks
            the batch, the next run recomputes it).
    """
    storage_options = state.storage_options if storage_options is None else storage_options
    store = state.checkpoints()
    records = (rec for stage in store.stages() for rec in store.load(stage).records.values())
    return quarantine_of(records, storage_options, limit)


def quarantine_of(
    records: Iterable[dict[str, Any]],
    storage_options: dict[str, Any],
    limit: int | None = None,
) -> pa.Table:
    """The quarantined bad records of the given checkpoint records (committed ones only).

    Raises:
        IntegrityError: as ``quarantined``.
    """
    tables: list[pa.Table] = []
    stores: dict[str, ArtifactStore] = {}
    for rec in records:
        if limit is not None and sum(t.num_rows for t in tables) >= limit:
            break
        q = rec.get("quarantine")
        if q and rec["status"] == BatchStatus.SUCCEEDED:
            ref = q["artifact"]
            try:
                artifacts = ArtifactStore.for_uri(ref["uri"], storage_options, stores)
                tables.append(artifacts.read(ref))
            except (IntegrityError, FileNotFoundError) as exc:
                problem = str(exc) if isinstance(exc, IntegrityError) else "it is missing"
                raise IntegrityError(
                    f"the quarantine artifact of stage {rec.get('stage')} batch {rec['key'][:16]}… "
                    f"({ref['uri']}) cannot be read: {problem}. Fix: run `winnow verify "
                    "--full`, which marks the batch FAILED, then rerun the pipeline, "
                    "which recomputes it and its quarantine"
                ) from None
    if not tables:
        return pa.table({"file": [], "row": [], "error": [], "raw": []})
    table = pa.concat_tables(tables, promote_options="default")
    return table.slice(0, limit) if limit is not None else table
