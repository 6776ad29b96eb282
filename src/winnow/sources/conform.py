"""Fitting input rows to a pipeline's schema.

A file whose columns are known up front (Parquet, Arrow IPC, a CSV header) is
checked against the schema during planning (``check``). While reading, rows
are cast to the schema's types; a row that cannot be (a value of the wrong
type, invalid UTF-8, a null in a non-nullable column, a column the file lacks)
is set aside as a bad record naming the column and why, never dropped or
filled silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from winnow.errors import InputError
from winnow.sources.jsonl import MAX_RAW, BadRecord

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
Cast = Callable[[pa.Array, pa.DataType], pa.Array]


def _plain_cast(array: pa.Array, to: pa.DataType) -> pa.Array:
    return array if array.type == to else array.cast(to)


def castable(found: pa.DataType, to: pa.DataType) -> bool:
    """Whether Arrow has a cast from ``found`` to ``to`` (values may still fail it)."""
    if found == to or pa.types.is_null(found):
        return True
    try:
        pa.array([], type=found).cast(to)
    except _CAST_ERRORS:
        return False
    return True


def problem(found: pa.Schema, schema: pa.Schema) -> str:
    """What keeps rows with columns ``found`` from fitting ``schema``; '' when nothing.

    Extra columns alone are no problem (they are dropped); they are named
    beside missing ones, since together they usually mean a renamed column or
    the wrong file.
    """
    types: dict[str, pa.DataType] = {}
    for field in found:
        types.setdefault(field.name, field.type)
    missing = [f.name for f in schema if f.name not in types]
    twice = [name for name in schema.names if found.names.count(name) > 1]
    parts = ["columns named more than once " + ", ".join(twice)] if twice else []
    if missing:
        parts.append("missing columns " + ", ".join(missing))
        extra = [name for name in types if name not in schema.names]
        if extra:
            parts.append("extra columns " + ", ".join(extra))
    wrong = [
        f"{f.name} ({types[f.name]} cannot be cast to {f.type})"
        for f in schema
        if f.name in types and not castable(types[f.name], f.type)
    ]
    if wrong:
        parts.append("columns of the wrong type " + ", ".join(wrong))
    return "; ".join(parts)


def check(url: str, found: pa.Schema, schema: pa.Schema) -> None:
    """Refuse a file whose columns cannot fit the pipeline's schema.

    Raises:
        InputError: naming the file, its missing/extra/uncastable columns and the fix.
    """
    found_problem = problem(found, schema)
    if found_problem:
        raise InputError(
            f"input {url!r} does not match pipeline schema: {found_problem}. "
            "Fix the file or the pipeline's schema."
        )


def conform(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    url: str,
    numbers: Sequence[int],
    cast: Cast = _plain_cast,
    raw: Callable[[pa.RecordBatch, int], str] | None = None,
) -> tuple[pa.RecordBatch, list[BadRecord]]:
    """``batch`` cast to ``schema``, and the rows that would not cast as bad records.

    Args:
        batch: rows as read from the file (extra columns are dropped).
        schema: the pipeline's schema.
        url: the file, for the bad records.
        numbers: each row's number in the file (what a bad record reports).
        cast: how one column becomes a schema type (CSV's text has its own rules).
        raw: a row's text for its bad record; by default the row as JSON.
    """
    raw = raw or _json_row
    names = set(batch.schema.names)
    missing = [f.name for f in schema if f.name not in names]
    if missing:
        reason = (
            f"SchemaMismatch: the file has no column {', '.join(missing)} of the pipeline's "
            "schema; fix the file or the pipeline's schema"
        )
        bad = [BadRecord(url, numbers[i], reason, raw(batch, i)) for i in range(batch.num_rows)]
        return _empty(schema), bad
    reasons: dict[int, str] = {}  # row -> why it does not fit
    columns: list[pa.Array] = []
    for field in schema:
        column = _column(batch, field.name)
        try:
            columns.append(cast(column, field.type))
        except _CAST_ERRORS:
            for i, why in _failing(column, field.type, cast):
                reasons.setdefault(i, f"{_kind(why)}: column {field.name!r}: {why}"[:500])
    positions: Sequence[int] = range(batch.num_rows)
    if reasons:  # cast again without the rows that failed: now every value fits
        positions = [i for i in positions if i not in reasons]
        kept = batch.take(pa.array(positions, pa.int64()))
        columns = [cast(_column(kept, f.name), f.type) for f in schema]
    out = pa.RecordBatch.from_arrays(columns, schema=schema)
    nulls: set[int] = set()
    for field in schema:
        column = out.column(field.name)
        if field.nullable or not column.null_count:
            continue
        for j in pc.indices_nonzero(column.is_null()).to_pylist():
            nulls.add(j)
            reasons.setdefault(
                positions[j],
                f"SchemaMismatch: column {field.name!r} is null, and the pipeline's schema "
                "declares it non-nullable",
            )
    if nulls:
        out = out.filter(pa.array([j not in nulls for j in range(out.num_rows)]))
    bad = [BadRecord(url, numbers[i], why, raw(batch, i)) for i, why in sorted(reasons.items())]
    return out, bad


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    return batch.column(batch.schema.names.index(name))  # the first, if named twice


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _failing(
    array: pa.Array, to: pa.DataType, cast: Cast, offset: int = 0
) -> list[tuple[int, str]]:
    """Positions of the values that do not cast, found by halving: O(bad * log n) casts."""
    try:
        cast(array, to)
    except _CAST_ERRORS as exc:
        if len(array) == 1:
            return [(offset, str(exc))]
        mid = len(array) // 2
        return _failing(array.slice(0, mid), to, cast, offset) + _failing(
            array.slice(mid), to, cast, offset + mid
        )
    return []


def _kind(why: str) -> str:
    return "UnicodeDecodeError" if "UTF8" in why or "UTF-8" in why else "WrongType"


def _json_row(batch: pa.RecordBatch, i: int) -> str:
    [row] = batch.slice(i, 1).to_pylist()
    return json.dumps(row, ensure_ascii=False, default=str)[:MAX_RAW]
