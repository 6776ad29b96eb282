"""Parquet artifact encoding: which columns get a dictionary, and that it round-trips."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.storage import formats


def _encodings(data: bytes) -> dict[str, tuple[str, ...]]:
    meta = pq.read_metadata(pa.BufferReader(data))
    group = meta.row_group(0)
    return {
        group.column(i).path_in_schema: group.column(i).encodings for i in range(meta.num_columns)
    }


def _mixed(rows: int = 3000) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "id": list(range(rows)),
            "text": [f"document {i} " + "word " * (i % 40) for i in range(rows)],
            "lang": ["en", "de", "fr"] * (rows // 3),
            "tags": [["a", "b"] if i % 2 else ["c"] for i in range(rows)],
            "meta": [{"source": "crawl", "n": i} for i in range(rows)],
            "blob": [bytes([i % 7]) * 4 for i in range(rows)],
        }
    )


def test_mostly_distinct_text_is_written_plain_and_the_rest_keeps_a_dictionary():
    batch = _mixed()
    chosen = formats.dictionary_columns(batch)
    assert isinstance(chosen, list)
    assert "text" not in chosen
    assert {"id", "lang", "tags.list.element", "meta.source", "meta.n", "blob"} <= set(chosen)

    encodings = _encodings(formats.serialize(batch, "parquet"))
    assert "RLE_DICTIONARY" not in encodings["text"]
    for path in ("lang", "tags.list.element", "meta.source", "blob"):
        assert "RLE_DICTIONARY" in encodings[path], path


def test_low_cardinality_text_keeps_every_dictionary():
    batch = pa.RecordBatch.from_pydict({"label": ["keep", "drop"] * 2000, "n": list(range(4000))})
    assert formats.dictionary_columns(batch) is True
    assert "RLE_DICTIONARY" in _encodings(formats.serialize(batch, "parquet"))["label"]


def test_empty_and_all_null_text_columns_keep_the_default():
    empty = pa.RecordBatch.from_pydict({"text": pa.array([], pa.string())})
    nulls = pa.RecordBatch.from_pydict({"text": pa.array([None] * 10, pa.large_string())})
    assert formats.dictionary_columns(empty) is True
    assert formats.dictionary_columns(nulls) is True
    for batch in (empty, nulls):
        assert (
            formats.decode(formats.serialize(batch, "parquet"), "parquet").num_rows
            == batch.num_rows
        )


def test_parquet_artifacts_round_trip_and_are_deterministic():
    batch = _mixed()
    data = formats.serialize(batch, "parquet")
    assert formats.serialize(_mixed(), "parquet") == data
    table = formats.decode(data, "parquet")
    assert table.equals(pa.Table.from_batches([batch]))
    decoded = formats.check(data, "parquet")
    assert decoded.records == batch.num_rows
    assert decoded.schema_fp == formats.schema_fingerprint(table.schema)
