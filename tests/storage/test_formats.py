"""Artifact encoding: which Parquet columns get a dictionary, round trips, footer checks."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from winnow.errors import IntegrityError
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
            assert formats.check(data, fmt, full=False).records == batch.num_rows
            assert formats.stored_schema_fp(batch.schema, fmt)
            assert formats.decode(data, fmt).num_rows == batch.num_rows
        print("pandas imported" if "pandas" in sys.modules else "no pandas")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(stream)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "no pandas"


def _typed() -> pa.RecordBatch:
    """Types that Parquet stores otherwise (date64, seconds, list items, maps) and more."""
    day, moment = datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2, 3, 4, 5)
    return pa.RecordBatch.from_pydict(
        {
            "date64": pa.array([day, None, day], pa.date64()),
            "seconds": pa.array([moment] * 3, pa.timestamp("s")),
            "utc": pa.array([moment] * 3, pa.timestamp("ns", "UTC")),
            "time": pa.array([1, 2, 3], pa.time32("s")),
            "unsigned": pa.array([1, 2, 3], pa.uint32()),
            "large": pa.array(["a", "b", None], pa.large_string()),
            "label": pa.array(["x", "y", "x"]).dictionary_encode(),
            "fixed": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int64(), 2)),
            "map": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64())),
            "nothing": pa.nulls(3),
        }
    )


@pytest.mark.parametrize("fmt", ["parquet", "ipc", "jsonl"])
@pytest.mark.parametrize("make", [_mixed, _typed], ids=["mixed", "typed"])
def test_the_footer_check_reports_what_a_full_decode_does(fmt, make):
    """A commit records the footer's record count and schema; ``verify --full`` compares
    the decode's with them, so the two must agree on every type."""
    batch = make()
    data = formats.serialize(batch, fmt)
    quick = formats.check(data, fmt, full=False)
    assert quick == formats.check(data, fmt) and quick.records == batch.num_rows
    assert quick.schema_fp == formats.stored_schema_fp(batch.schema, fmt)


def test_stored_schema_is_the_schema_as_the_format_keeps_it():
    batch = _typed()
    kept = formats.decode(formats.serialize(batch, "parquet"), "parquet").schema
    assert kept.field("date64").type == pa.date32()  # Parquet's own type, not the batch's
    assert formats.stored_schema_fp(batch.schema, "parquet") == formats.schema_fingerprint(kept)
    assert formats.stored_schema_fp(batch.schema, "ipc") == formats.schema_fingerprint(batch.schema)
    assert formats.stored_schema_fp(batch.schema, "jsonl") == ""


def test_the_footer_check_of_ipc_counts_every_record_batch_and_skips_dictionaries():
    labels = pa.array(["a", "b", "a", "c"]).dictionary_encode()
    schema = pa.schema([("n", pa.int64()), ("label", labels.type)])
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression="zstd", emit_dictionary_deltas=True)
    with ipc.new_file(sink, schema, options=options) as writer:
        for rows in (4, 0, 3):
            writer.write_batch(
                pa.RecordBatch.from_arrays(
                    [pa.array(range(rows)), labels.slice(0, rows)], schema=schema
                )
            )
    data = sink.getvalue().to_pybytes()
    assert formats.check(data, "ipc", full=False) == formats.check(data, "ipc")
    assert formats.check(data, "ipc", full=False).records == 7


@pytest.mark.parametrize("fmt", ["parquet", "ipc"])
def test_a_torn_artifact_fails_the_footer_check(fmt):
    data = formats.serialize(_mixed(300), fmt)
    with pytest.raises(IntegrityError, match=f"{fmt} artifact has an unreadable footer"):
        formats.check(data[:-10], fmt, full=False)


def test_jsonl_is_counted_at_commit_and_parsed_by_a_full_check():
    data = b'{"a":1}\n{"a":\n'
    assert formats.check(data, "jsonl", full=False).records == 2
    with pytest.raises(IntegrityError, match="JSONL line 2 is not valid JSON"):
        formats.check(data, "jsonl")
    with pytest.raises(IntegrityError, match="torn write"):
        formats.check(data[:-1], "jsonl", full=False)
