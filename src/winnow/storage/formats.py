"""Deterministic serialization of record batches, and decoding for verification.

Equal batches give equal bytes within one pyarrow version, so equal outputs
share one content-addressed artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from winnow.errors import IntegrityError

EXTENSIONS = {"parquet": "parquet", "ipc": "arrow", "jsonl": "jsonl"}


def schema_fingerprint(schema: pa.Schema) -> str:
    """A short digest of field names and types (metadata ignored)."""
    text = ",".join(f"{f.name}:{f.type}:{f.nullable}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def serialize(batch: pa.RecordBatch, fmt: str, compression: str = "zstd") -> bytes:
    """Encode one batch as Parquet, Arrow IPC (file) or JSONL bytes."""
    batch = batch.replace_schema_metadata(None)
    if fmt == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(
            pa.Table.from_batches([batch], schema=batch.schema),
            sink,
            compression=None if compression == "none" else compression,
            row_group_size=max(batch.num_rows, 1),
            store_schema=True,
        )
        return sink.getvalue().to_pybytes()
    if fmt == "ipc":
        sink = pa.BufferOutputStream()
        options = ipc.IpcWriteOptions(
            compression=None if compression in ("none", "snappy") else compression
        )
        with ipc.new_file(sink, batch.schema, options=options) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()
    if fmt == "jsonl":
        lines = [
            json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)
            for row in batch.to_pylist()
        ]
        return ("".join(line + "\n" for line in lines)).encode()
    raise ValueError(f"unknown artifact format {fmt!r}")


@dataclass(frozen=True)
class Decoded:
    records: int
    schema_fp: str


def decode(data: bytes, fmt: str) -> pa.Table:
    """Decode artifact bytes fully into a table."""
    if fmt == "parquet":
        return pq.read_table(pa.BufferReader(data))
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
