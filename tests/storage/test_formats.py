"""Parquet artifact encoding: which columns get a dictionary, and that it round-trips."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.ipc as ipc
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


def test_writing_and_verifying_an_artifact_does_not_import_pandas(tmp_path):
    """pandas costs a stage worker about a second of CPU to import; the artifact path needs none.

    The batch reaches the child as Arrow IPC, since building one from Python
    lists (pa.array) imports pandas itself.
    """
    stream = tmp_path / "batch.arrows"
    batch = _mixed(300)
    with ipc.new_stream(str(stream), batch.schema) as writer:
        writer.write_batch(batch)
    code = textwrap.dedent(
        """
        import sys
        import pyarrow as pa
        import pyarrow.ipc as ipc
        from winnow.storage import formats

        batch = ipc.open_stream(pa.OSFile(sys.argv[1])).read_next_batch()
        for fmt in ("parquet", "ipc"):
            data = formats.serialize(batch, fmt)
            assert formats.check(data, fmt).records == batch.num_rows
            assert formats.decode(data, fmt).num_rows == batch.num_rows
        print("pandas imported" if "pandas" in sys.modules else "no pandas")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(stream)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "no pandas"
