"""A checkpoint segment's columnar index: plan 100,000 batches without decoding JSON.

At 100,000 batches a stage's segments hold 70 MB of JSON lines, and
decoding them is most of what deciding "skip" costs. Beside each segment
(written at every flush, and the merged one compaction leaves) goes an Arrow
IPC file holding each of its records' ``records.SUMMARY_FIELDS`` (what
planning reads), at
``stages/<stage>/index/<segment file name>.<SHA-256 of this file>.arrow``;
compaction removes the indexes of the segments it merged. So a run killed
before its end, which never compacted, leaves a state planned from indexes
too. Writing an index is best effort: without it the segment is whole.

The index is derived, never trusted on its own. A planning load uses it for
a segment only when the index's bytes hash to the digest in its name and it
names that segment's exact bytes (file name, length and SHA-256, hashed again
as the segment is read). Anything else (no index, a damaged or partial one,
one left from a segment since repaired or replaced) and the segment's JSON
lines are decoded as before, with their damage reported by line.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.records import SUMMARY_FIELDS
from winnow.storage import segment_lines

FOLDER = "index"
SUFFIX = ".arrow"
VERSION = b"1"
CHUNK_RECORDS = 4096  # lines decoded (and rows built) at a time while indexing

INT_FIELDS = ("attempt", "rows_in", "rows_out", "source_rows", "bad_records", "blank_lines")
_REF_STRINGS = ("uri", "digest", "schema_fp", "format")
_REF_INTS = ("bytes", "records")
_REF_KEYS = frozenset((*_REF_STRINGS, *_REF_INTS))
_SHARED = ("status", "art_schema_fp", "art_format")  # few distinct values: dictionary-encoded
_INT64 = range(-(2**63), 2**63)
NUMPY = {pa.int64(): np.int64, pa.float64(): np.float64}

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("ts", pa.float64()),
        ("status", pa.dictionary(pa.int32(), pa.string())),
        *((name, pa.int64()) for name in INT_FIELDS),
        ("art_uri", pa.string()),
        ("art_digest", pa.string()),
        ("art_bytes", pa.int64()),
        ("art_records", pa.int64()),
        ("art_schema_fp", pa.dictionary(pa.int32(), pa.string())),
        ("art_format", pa.dictionary(pa.int32(), pa.string())),
        ("other", pa.string()),  # JSON of what fits no column (errors, shards, odd values)
    ]
)


def index_path(segment: str, digest: str) -> str:
    """Where the index of the segment at ``segment`` goes, named by its own ``digest``."""
    stage_dir = posixpath.dirname(posixpath.dirname(segment))
    return posixpath.join(stage_dir, FOLDER, f"{posixpath.basename(segment)}.{digest}{SUFFIX}")


def indexed_segment(path: str) -> tuple[str, str] | None:
    """The segment file name and the digest an index's name holds; None for another file."""
    name = posixpath.basename(path)
    if posixpath.basename(posixpath.dirname(path)) != FOLDER or not name.endswith(SUFFIX):
        return None
    segment, _, digest = name[: -len(SUFFIX)].rpartition(".")
    return (segment, digest) if segment and len(digest) == 64 else None


def build(
    lines: Iterable[bytes], count: int, segment: str, segment_sha256: str, segment_bytes: int
) -> bytes:
    """The index (Arrow IPC file bytes) of a segment's record lines, in segment order.

    Args:
        lines: the segment's lines, each one checkpoint record (undamaged);
            decoded ``CHUNK_RECORDS`` at a time as they come.
        count: how many there are.
        segment: the segment's file name.
        segment_sha256: the SHA-256 of the segment's bytes.
        segment_bytes: its length.
    """
    sink = pa.BufferOutputStream()
    _write(sink, lines, count, segment, segment_sha256, segment_bytes)
    return bytes(sink.getvalue().to_pybytes())


def write_local(path: str, count: int, segment_sha256: str, segment_bytes: int) -> str:
    """Index the local segment at ``path`` (``count`` records) a piece at a time; return where.

    The segment is read back in pieces and the index goes to a temporary
    name a batch at a time, is hashed, fsynced and renamed to the name its
    digest gives: neither the segment's lines nor the index are held whole.
    """
    folder = posixpath.dirname(index_path(path, ""))
    segment = posixpath.basename(path)
    os.makedirs(folder, exist_ok=True)
    tmp = posixpath.join(folder, f"{segment}.tmp-{uuid.uuid4().hex}")
    try:
        with open(path, "rb") as fh, pa.OSFile(tmp, "wb") as sink:
            pieces = segment_lines.file_pieces(fh)
            lines = (line for _, piece in pieces for line in piece.split(b"\n") if line.strip())
            _write(sink, lines, count, segment, segment_sha256, segment_bytes)
        sha = hashlib.sha256()
        with open(tmp, "rb") as fh:
            while chunk := fh.read(4 << 20):
                sha.update(chunk)
            os.fsync(fh.fileno())
        target = posixpath.join(folder, f"{segment}.{sha.hexdigest()}{SUFFIX}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _write(
    sink: Any, lines: Iterable[bytes], count: int, segment: str, sha256: str, size: int
) -> None:
    """Write the index of ``count`` record lines to ``sink``, ``CHUNK_RECORDS`` rows a batch."""
    meta = {
        b"winnow.index": VERSION,
        b"winnow.segment": segment.encode(),
        b"winnow.segment_sha256": sha256.encode(),
        b"winnow.segment_bytes": str(size).encode(),
        b"winnow.records": str(count).encode(),
    }
    written = 0
    with pa.ipc.new_file(sink, SCHEMA.with_metadata(meta)) as writer:
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == CHUNK_RECORDS:
                writer.write_batch(_batch(chunk))
                written, chunk = written + len(chunk), []
        if chunk:
            writer.write_batch(_batch(chunk))
            written += len(chunk)
    if written != count:
        raise ValueError(f"{segment}: {written} record lines, {count} expected")


def _batch(lines: list[bytes]) -> pa.RecordBatch:
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for rec in json.loads(b"[" + b",".join(lines) + b"]"):
        for name, value in _row(rec).items():
            columns[name].append(value)
    arrays = [_array(columns[field.name], field.type) for field in SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def _array(values: list[Any], kind: pa.DataType) -> pa.Array:
    """A column of the index from Python values, built from buffers.

    ``pa.array`` on a Python list imports pandas when it is installed (to ask
    whether the list is a pandas object): a third of a second of the driver's
    CPU at its first checkpoint flush, for nothing.
    """
    valid = [v is not None for v in values]
    mask = None if all(valid) else pa.py_buffer(np.packbits(valid, bitorder="little"))
    n = len(values)
    if pa.types.is_dictionary(kind):
        codes: dict[str, int] = {}
        indices = [0 if v is None else codes.setdefault(v, len(codes)) for v in values]
        index_buffer = pa.py_buffer(np.array(indices, np.int32))
        dictionary = _array(list(codes), pa.string())
        return pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(pa.int32(), n, [mask, index_buffer]), dictionary
        )
    if kind == pa.string():
        encoded = [b"" if v is None else v.encode() for v in values]
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        data = pa.py_buffer(b"".join(encoded))
        if offsets[-1] < 2**31:
            offsets_buffer = pa.py_buffer(offsets.astype(np.int32))
            return pa.Array.from_buffers(kind, n, [mask, offsets_buffer, data])
        wide = pa.Array.from_buffers(pa.large_string(), n, [mask, pa.py_buffer(offsets), data])
        return wide.cast(kind)  # fails as a string column of over 2 GiB would
    numbers = np.array([0 if v is None else v for v in values], NUMPY[kind])
    return pa.Array.from_buffers(kind, n, [mask, pa.py_buffer(numbers)])


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's summary as index columns; what fits no column goes whole into ``other``."""
    other = {k: rec[k] for k in SUMMARY_FIELDS if k in rec and k not in ("key", "ts", "status")}
    row: dict[str, Any] = {"key": rec["key"], "ts": float(rec["ts"]), "status": rec["status"]}
    if type(rec["ts"]) is not float:
        other["ts"] = rec["ts"]
    for name in INT_FIELDS:
        value = other.get(name)
        fits = type(value) is int and value in _INT64
        row[name] = other.pop(name) if fits else None
    art: Any = other.get("artifact")
    plain = type(art) is dict and art.keys() == _REF_KEYS
    plain = plain and all(type(art[k]) is str for k in _REF_STRINGS)
    if plain and all(type(art[k]) is int and art[k] in _INT64 for k in _REF_INTS):
        del other["artifact"]
    else:
        art = {}
    for name in (*_REF_STRINGS, *_REF_INTS):
        row[f"art_{name}"] = art.get(name)
    row["other"] = json.dumps(other, separators=(",", ":")) if other else None
    return row


def digest(data: bytes) -> str:
    """The SHA-256 an index's name holds, of its bytes."""
    return hashlib.sha256(data).hexdigest()


def records(
    data: bytes, named: str, segment: str, segment_sha256: str, segment_bytes: int
) -> list[dict[str, Any]] | None:
    """The summaries an index holds, in segment order, or None when it is not to be trusted.

    Args:
        data: the index file's bytes.
        named: the digest its name holds.
        segment: the file name of the segment it is read for.
        segment_sha256: that segment's SHA-256, of its bytes as read now.
        segment_bytes: their length.
    """
    if digest(data) != named:
        return None  # damaged or partial
    try:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    except (pa.ArrowException, OSError, ValueError):
        return None
    meta = table.schema.metadata or {}
    expected = {
        b"winnow.index": VERSION,
        b"winnow.segment": segment.encode(),
        b"winnow.segment_sha256": segment_sha256.encode(),
        b"winnow.segment_bytes": str(segment_bytes).encode(),
        b"winnow.records": str(table.num_rows).encode(),
    }
    if any(meta.get(k) != v for k, v in expected.items()) or not table.schema.equals(SCHEMA):
        return None  # another segment's (one since repaired or replaced), or another layout
    return _summaries(table)


def _summaries(table: pa.Table) -> list[dict[str, Any]]:
    """Each row as the summary it was built from: only the fields the record had.

    Built a column set at a time (``dict(zip(...))`` per row): the columns
    every row has, then the artifacts, then the columns only some rows have.
    """
    n = table.num_rows
    c = {name: _values(table.column(name)) for name in SCHEMA.names}
    nulls = {name: table.column(name).null_count for name in INT_FIELDS}
    always = ["key", "ts", "status", *(k for k in INT_FIELDS if nulls[k] == 0)]
    out = [dict(zip(always, row, strict=True)) for row in zip(*(c[k] for k in always), strict=True)]
    refs = (*_REF_STRINGS, *_REF_INTS)
    for rec, row in zip(out, zip(*(c[f"art_{k}"] for k in refs), strict=True), strict=True):
        if row[1] is not None:  # its digest: a row without an artifact has none
            rec["artifact"] = dict(zip(refs, row, strict=True))
    for name in (k for k in INT_FIELDS if 0 < nulls[k] < n):
        for rec, value in zip(out, c[name], strict=True):
            if value is not None:
                rec[name] = value
    for rec, other in zip(out, c["other"], strict=True):
        if other is not None:
            rec.update(json.loads(other))
    return out


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values; a dictionary column's strings shared, one object each."""
    if not pa.types.is_dictionary(column.type):
        return list(column.to_pylist())
    out: list[Any] = []
    for chunk in column.chunks:
        words = chunk.dictionary.to_pylist()
        out += [None if i is None else words[i] for i in chunk.indices.to_pylist()]
    return out
