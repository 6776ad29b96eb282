"""Deterministic serialization of record batches, and checking them for verification.

Equal batches give equal bytes within one pyarrow version, so equal outputs
share one content-addressed artifact. ``check`` proves bytes are a valid
artifact: from the format's footer (record count, schema) at commit, where
the bytes read back were already compared with the bytes whose SHA-256 names
the artifact, or by a full decode for ``verify --full``. ``pyarrow.parquet``
and ``pyarrow.ipc`` are imported where bytes are written or read: an
all-skipped rerun needs neither.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import struct
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


def check(data: bytes, fmt: str, *, full: bool = True) -> Decoded:
    """Prove the bytes are a valid artifact of ``fmt``; return what they hold.

    Args:
        data: the artifact's bytes.
        fmt: its format.
        full: decode it all (every Parquet page and IPC buffer; every JSONL
            line parsed). Otherwise read the record count and schema from the
            format's metadata alone: the Parquet footer, the IPC footer and
            record batch headers, the JSONL line count, which proves what a
            commit needs once the bytes read back equal the bytes written.

    Raises:
        IntegrityError: the bytes do not decode, or a JSONL line is not JSON.
    """
    try:
        if fmt == "jsonl":
            return _check_jsonl(data, full)
        if not full:
            return _from_metadata(data, fmt)
        table = decode(data, fmt)
    except IntegrityError:
        raise
    except (pa.ArrowException, OSError, ValueError, struct.error) as exc:
        what = "does not decode" if full else "has an unreadable footer"
        raise IntegrityError(f"{fmt} artifact {what} ({type(exc).__name__}: {exc})") from None
    return Decoded(records=table.num_rows, schema_fp=schema_fingerprint(table.schema))


def _check_jsonl(data: bytes, full: bool) -> Decoded:
    count = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line:
            continue
        if full:
            try:
                json.loads(line)
            except ValueError as exc:
                raise IntegrityError(f"JSONL line {number} is not valid JSON ({exc})") from None
        count += 1
    if data and not data.endswith(b"\n"):
        raise IntegrityError("JSONL artifact does not end with a newline (torn write)")
    return Decoded(records=count, schema_fp="")


def _from_metadata(data: bytes, fmt: str) -> Decoded:
    """Record count and schema from the footer and headers, no data pages or buffers decoded."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if fmt == "parquet":
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
        in_groups = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        if in_groups != meta.num_rows:
            raise IntegrityError(
                f"parquet artifact footer says {meta.num_rows} rows, its row groups {in_groups}"
            )
        return Decoded(
            records=meta.num_rows, schema_fp=schema_fingerprint(meta.schema.to_arrow_schema())
        )
    if fmt == "ipc":
        buffer = pa.py_buffer(data)
        footer = ipc.open_file(pa.BufferReader(buffer))
        # The file is a magic (8 bytes), the stream's messages, then the footer.
        messages = ipc.MessageReader.open_stream(pa.BufferReader(buffer.slice(IPC_MAGIC)))
        lengths = [_batch_length(m.metadata) for m in messages if m.type == "record batch"]
        if len(lengths) != footer.num_record_batches:
            raise IntegrityError(
                f"ipc artifact footer lists {footer.num_record_batches} record batches, "
                f"its stream holds {len(lengths)}"
            )
        return Decoded(records=sum(lengths), schema_fp=schema_fingerprint(footer.schema))
    raise ValueError(f"unknown artifact format {fmt!r}")


IPC_MAGIC = 8  # b"ARROW1" and two bytes of padding


def _batch_length(metadata: pa.Buffer) -> int:
    """A record batch message's row count, read from its flatbuffer header (Arrow's Message.fbs).

    pyarrow reads a batch's length only by decoding (decompressing) its
    buffers; the header says it in a few bytes: the root table ``Message``,
    field 2 ``header`` (a ``RecordBatch`` table), its field 0 ``length``.
    """
    fb = metadata.to_pybytes()

    def field(table: int, index: int) -> int:
        vtable = table - struct.unpack_from("<i", fb, table)[0]
        size = struct.unpack_from("<H", fb, vtable)[0]
        at = 4 + 2 * index
        return struct.unpack_from("<H", fb, vtable + at)[0] if at < size else 0

    message = struct.unpack_from("<I", fb, 0)[0]
    header = field(message, 2)
    if not header:
        raise IntegrityError("ipc artifact has a record batch message without a header")
    batch = message + header + struct.unpack_from("<I", fb, message + header)[0]
    length = field(batch, 0)  # absent: the default, 0
    return struct.unpack_from("<q", fb, batch + length)[0] if length else 0


@functools.lru_cache(maxsize=64)
def stored_schema_fp(schema: pa.Schema, fmt: str) -> str:
    """The schema fingerprint an artifact of ``fmt`` holding a batch of ``schema`` reports.

    Parquet stores some types otherwise (date64 as date32, seconds as
    milliseconds, a list's item as ``element``); this is what its footer says
    for them, to check a committed artifact's footer against. Empty for JSONL,
    which records no schema.
    """
    if fmt == "jsonl":
        return ""
    # pa.nulls, not pa.array([]): pa.array imports pandas, a second of CPU per worker.
    empty = pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)
    return _from_metadata(serialize(empty, fmt), fmt).schema_fp
