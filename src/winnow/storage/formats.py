"""Deterministic serialization of record batches, and decoding for verification.

Equal batches give equal bytes within one pyarrow version, so equal outputs
share one content-addressed artifact. ``pyarrow.parquet`` and ``pyarrow.ipc``
are imported where bytes are written or read: an all-skipped rerun needs neither.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from winnow.errors import IntegrityError

EXTENSIONS = {"parquet": "parquet", "ipc": "arrow", "jsonl": "jsonl"}
DATASET_FORMATS = {"parquet": "parquet", "ipc": "arrow", "jsonl": "json"}  # pyarrow.dataset's


def schema_fingerprint(schema: pa.Schema) -> str:
    """A short digest of field names and types (metadata ignored)."""
    text = ",".join(f"{f.name}:{f.type}:{f.nullable}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


DICTIONARY_SAMPLE = 1024  # leading values of a text column looked at to choose its encoding
DICTIONARY_MAX_DISTINCT = 0.5  # dictionary-encode when at most this share of them is distinct


def serialize(batch: pa.RecordBatch, fmt: str, compression: str = "zstd") -> bytes:
    """Encode one batch as Parquet, Arrow IPC (file) or JSONL bytes."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    batch = batch.replace_schema_metadata(None)
    if fmt == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.Table.from_batches([batch], schema=batch.schema),
            sink,
            compression=None if compression == "none" else compression,
            row_group_size=max(batch.num_rows, 1),
            store_schema=True,
            use_dictionary=dictionary_columns(batch),
        )
        parquet_bytes: bytes = sink.getvalue().to_pybytes()
        return parquet_bytes
    if fmt == "ipc":
        sink = pa.BufferOutputStream()
        options = ipc.IpcWriteOptions(
            compression=None if compression in ("none", "snappy") else compression
        )
        with ipc.new_file(sink, batch.schema, options=options) as writer:
            writer.write_batch(batch)
        ipc_bytes: bytes = sink.getvalue().to_pybytes()
        return ipc_bytes
    if fmt == "jsonl":
        lines = [
            json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)
            for row in batch.to_pylist()
        ]
        return ("".join(line + "\n" for line in lines)).encode()
    raise ValueError(f"unknown artifact format {fmt!r}")


def dictionary_columns(batch: pa.RecordBatch) -> bool | list[str]:
    """The Parquet columns worth dictionary-encoding: all but high-cardinality text.

    Parquet writers try a dictionary for every column and fall back to plain
    encoding once it grows too big; for long, mostly distinct strings (the
    documents a curation pipeline carries) that attempt hashes every value for
    nothing and costs about 40% of the write. A text column whose leading
    values are mostly distinct is written plain; every other column keeps the
    dictionary. The choice depends on the batch's values alone, so equal
    batches still give equal bytes.
    """
    plain = set()
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if not _is_text(field.type):
            continue
        sample = column.slice(0, DICTIONARY_SAMPLE)
        valid = len(sample) - sample.null_count
        if valid and pc.count_distinct(sample).as_py() > DICTIONARY_MAX_DISTINCT * valid:
            plain.add(field.name)
    if not plain:
        return True
    return [path for path in _leaf_paths(batch.schema) if path.split(".", 1)[0] not in plain]


def _is_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


@functools.lru_cache(maxsize=64)
def _leaf_paths(schema: pa.Schema) -> tuple[str, ...]:
    """Parquet's dotted path of every leaf column of ``schema`` (nested ones too)."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    # Not schema.empty_table(): that imports pandas, a second of CPU per worker.
    pq.write_table(pa.Table.from_batches([], schema=schema), sink)
    parquet_schema = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    return tuple(parquet_schema.column(i).path for i in range(len(parquet_schema)))


@dataclass(frozen=True)
class Decoded:
    """What a valid artifact holds: its record count and schema fingerprint (empty for JSONL)."""

    records: int
    schema_fp: str


def decode(data: bytes, fmt: str) -> pa.Table:
    """Decode artifact bytes fully into a table."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if fmt == "parquet":
        # ParquetFile, not read_table: read_table goes through pyarrow.dataset,
        # whose import (pandas with it) costs a worker seconds on its first batch.
        return pq.ParquetFile(pa.BufferReader(data)).read()
    if fmt == "ipc":
        return ipc.open_file(pa.BufferReader(data)).read_all()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in io.BytesIO(data).read().splitlines() if line]
        return pa.Table.from_pylist(rows)
    raise ValueError(f"unknown artifact format {fmt!r}")


def check(data: bytes, fmt: str) -> Decoded:
    """Prove the bytes are a valid artifact of ``fmt``; return what they hold.

    Raises:
        IntegrityError: the bytes do not decode, or a JSONL line is not JSON.
    """
    try:
        if fmt == "jsonl":
            count = 0
            for number, line in enumerate(data.split(b"\n"), start=1):
                if not line:
                    continue
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise IntegrityError(f"JSONL line {number} is not valid JSON ({exc})") from None
                count += 1
            if data and not data.endswith(b"\n"):
                raise IntegrityError("JSONL artifact does not end with a newline (torn write)")
            return Decoded(records=count, schema_fp="")
        table = decode(data, fmt)
    except IntegrityError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise IntegrityError(
            f"{fmt} artifact does not decode ({type(exc).__name__}: {exc})"
        ) from None
    return Decoded(records=table.num_rows, schema_fp=schema_fingerprint(table.schema))
