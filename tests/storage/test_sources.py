from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import zstandard

from winnow.errors import InputError
from winnow.storage import sources

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])
ROWS = [{"id": i, "text": f"row {i}"} for i in range(23)]


def write_all(d: Path) -> dict[str, Path]:
    lines = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    table = pa.Table.from_pylist(ROWS, schema=SCHEMA)
    paths = {
        "jsonl": d / "a.jsonl",
        "gz": d / "b.jsonl.gz",
        "zst": d / "c.jsonl.zst",
        "parquet": d / "d.parquet",
        "csv": d / "e.csv",
        "ipc": d / "f.arrow",
    }
    paths["jsonl"].write_bytes(lines)
    paths["gz"].write_bytes(gzip.compress(lines))
    paths["zst"].write_bytes(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(table, paths["parquet"], row_group_size=7)
    pacsv.write_csv(table, paths["csv"])
    with ipc.new_file(str(paths["ipc"]), SCHEMA) as w:
        for b in table.to_batches(max_chunksize=5):
            w.write_batch(b)
    return paths


@pytest.mark.parametrize("kind", ["jsonl", "gz", "zst", "parquet", "csv", "ipc"])
def test_every_format_splits_into_exact_deterministic_batches(tmp_path: Path, kind: str):
    path = write_all(tmp_path)[kind]
    [f] = sources.discover([str(path)])
    stats = sources.file_stats(f)
    assert stats["rows"] == 23
    batches = sources.split(f, stats, 10, "fp")
    assert [(b.start, b.stop) for b in batches] == [(0, 10), (10, 20), (20, 23)]
    assert [b.key for b in batches] == [b.key for b in sources.split(f, stats, 10, "fp")]
    out = list(sources.read(f, [(b.start, b.stop) for b in batches], SCHEMA))
    got = [r for batch, bad in out for r in batch.to_pylist()]
    assert got == ROWS and all(not bad for _, bad in out)
    # a single range in the middle reads exactly those rows
    [(batch, _)] = list(sources.read(f, [(10, 20)], SCHEMA))
    assert batch.column("id").to_pylist() == list(range(10, 20))


def test_changed_file_changes_only_its_keys(tmp_path: Path):
    paths = write_all(tmp_path)
    before = {f.url: f.identity for f in sources.discover([str(tmp_path)])}
    paths["jsonl"].write_bytes(paths["jsonl"].read_bytes() + b'{"id": 99, "text": "new"}\n')
    after = {f.url: f.identity for f in sources.discover([str(tmp_path)])}
    changed = {u for u in after if after[u] != before[u]}
    assert changed == {str(paths["jsonl"])}


def test_bad_records_are_set_aside_with_file_line_and_error(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"id": 1, "text": "ok"}\n'
        b'{"id": 2, "text": "unterminated\n'
        b"\xff\xfe not utf8\n"
        b'{"id": "three", "text": "wrong type"}\n'
        b"[1, 2]\n"
        b'{"id": 6, "text": "ok too"}'  # torn last line without newline, but valid
    )
    [f] = sources.discover([str(path)])
    assert sources.file_stats(f) == {"rows": 6}
    [(batch, bad)] = list(sources.read(f, [(0, 6)], SCHEMA))
    assert batch.column("id").to_pylist() == [1, 6]
    assert [b.row for b in bad] == [2, 3, 4, 5]
    assert all(b.file == str(path) and b.error for b in bad)


def test_missing_input_and_unknown_extension_are_clear(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        sources.discover([str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="no readable files"):
        sources.discover([str(tmp_path)])


def test_globs_and_folders_are_sorted_and_deduplicated(tmp_path: Path):
    write_all(tmp_path)
    files = sources.discover([str(tmp_path / "*.jsonl*"), str(tmp_path)])
    assert [Path(f.url).name for f in files] == [
        "a.jsonl",
        "b.jsonl.gz",
        "c.jsonl.zst",
        "d.parquet",
        "e.csv",
        "f.arrow",
    ]


def test_without_a_schema_a_value_of_another_type_is_a_bad_record(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"id": 1, "text": null}\n'
        b'{"id": "seven", "text": "wrong type for id"}\n'
        b'{"id": 3, "text": "ok"}\n'
    )
    [f] = sources.discover([str(path)])
    [(batch, bad)] = list(sources.read(f, [(0, 3)], None))
    assert batch.column("id").to_pylist() == [1, 3]
    assert batch.column("text").to_pylist() == [None, "ok"]
    assert [b.row for b in bad] == [2]
    assert "seven" in bad[0].raw


def test_a_torn_gzip_keeps_its_readable_rows_and_quarantines_the_torn_line(tmp_path: Path):
    raw = b"".join(json.dumps({"id": i, "text": "x" * 50}).encode() + b"\n" for i in range(100))
    data = gzip.compress(raw)
    path = tmp_path / "torn.jsonl.gz"
    path.write_bytes(data[:-30])  # a copy cut short
    [f] = sources.discover([str(path)])
    rows = sources.file_stats(f)["rows"]
    assert 80 < rows < 100
    [(batch, bad)] = list(sources.read(f, [(0, rows)], SCHEMA))
    assert batch.column("id").to_pylist() == list(range(rows - 1))
    [torn] = bad
    assert torn.row == rows and torn.file == str(path)
    assert torn.error.startswith("TruncatedInput") and "copy it again" in torn.error
    assert torn.raw and raw.splitlines()[rows - 1].startswith(torn.raw.encode())


def _lines(ids: range) -> bytes:
    return b"".join(json.dumps({"id": i, "text": "x" * 50}).encode() + b"\n" for i in ids)


def test_a_single_block_zst_cut_short_is_a_bad_record_not_an_empty_file(tmp_path: Path):
    """zstandard's own reader ends quietly at a tear: the whole file read as empty."""
    path = tmp_path / "torn.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(_lines(range(100)))[:-20])
    [f] = sources.discover([str(path)])
    assert sources.file_stats(f)["rows"] == 1  # the tear stands for the lost rows
    [(batch, bad)] = list(sources.read(f, [(0, 1)], SCHEMA))
    assert batch.num_rows == 0
    [torn] = bad
    assert torn.row == 1 and torn.error.startswith("TruncatedInput")


def test_a_zst_cut_between_frames_keeps_every_complete_row_and_says_so(tmp_path: Path):
    """Cut right after a frame: every line read is whole, yet rows are missing."""
    compressor = zstandard.ZstdCompressor()
    first = compressor.compress(_lines(range(40)))
    second = compressor.compress(_lines(range(40, 80)))
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(first + second[:10])
    [f] = sources.discover([str(path)])
    rows = sources.file_stats(f)["rows"]
    assert rows == 41
    batches = list(sources.read(f, [(0, 20), (20, 41)], SCHEMA))
    assert [b.num_rows for b, _ in batches] == [20, 20]
    [torn] = batches[1][1]
    assert torn.row == 41 and torn.raw == "" and torn.error.startswith("TruncatedInput")
    # an intact file of several frames reads whole, with nothing set aside
    path.write_bytes(first + second)
    [f] = sources.discover([str(path)])
    [(batch, bad)] = list(sources.read(f, [(0, 80)], SCHEMA))
    assert batch.column("id").to_pylist() == list(range(80)) and bad == []


@pytest.mark.parametrize("suffix", ["csv.gz", "csv.zst"])
def test_a_compressed_csv_cut_short_is_a_named_input_error(tmp_path: Path, suffix: str):
    raw = b"id,text\n" + b"".join(f"{i},{'x' * 50}\n".encode() for i in range(2000))
    data = gzip.compress(raw) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / f"torn.{suffix}"
    path.write_bytes(data[:-30])
    [f] = sources.discover([str(path)])
    with pytest.raises(InputError, match="cut short") as err:
        sources.file_stats(f)
    assert str(path) in str(err.value) and "copy it again" in str(err.value)


def test_invalid_utf8_inside_a_json_string_is_a_bad_record(tmp_path: Path):
    path = tmp_path / "utf8.jsonl"
    path.write_bytes(
        b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "caf\xe9"}\n{"id": 3, "text": "ok"}\n'
    )
    [f] = sources.discover([str(path)])
    [(batch, bad)] = list(sources.read(f, [(0, 3)], SCHEMA))
    assert batch.column("id").to_pylist() == [1, 3]
    assert [b.row for b in bad] == [2] and "UnicodeDecodeError" in bad[0].error


@pytest.mark.parametrize(
    ("group_rows", "batch_rows", "by_range"),
    [
        (7, 14, True),  # groups of 7, 7, 7, 2: every batch of 14 starts on a group
        (7, 7, True),
        (7, 10, False),  # batches would start mid-group and decode rows twice
        (30, 10, False),  # one group bigger than a batch: read it once, as a stream
        (23, 23, True),
    ],
)
def test_parquet_batches_are_read_by_range_only_when_they_align_with_row_groups(
    tmp_path: Path, group_rows: int, batch_rows: int, by_range: bool
):
    path = tmp_path / "g.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS, schema=SCHEMA), path, row_group_size=group_rows)
    [f] = sources.discover([str(path)])
    stats = sources.file_stats(f)
    assert stats == {"rows": 23, "row_group_rows": min(group_rows, 23)}
    batches = sources.split(f, stats, batch_rows, "fp")
    assert {b.by_range for b in batches} == {by_range}
    # either way a range reads exactly its rows
    for b in batches:
        [(batch, _)] = list(sources.read(f, [(b.start, b.stop)], SCHEMA))
        assert batch.column("id").to_pylist() == list(range(b.start, b.stop))


def test_uneven_row_groups_and_other_formats_are_read_as_one_stream(tmp_path: Path):
    path = tmp_path / "uneven.parquet"
    table = pa.Table.from_pylist(ROWS, schema=SCHEMA)
    with pq.ParquetWriter(path, SCHEMA) as writer:
        writer.write_table(table.slice(0, 3))
        writer.write_table(table.slice(3, 20))
    [f] = sources.discover([str(path)])
    assert sources.file_stats(f) == {"rows": 23, "row_group_rows": 0}
    assert not any(b.by_range for b in sources.split(f, sources.file_stats(f), 3, "fp"))
    for kind, p in write_all(tmp_path).items():
        if kind != "parquet":
            [f] = sources.discover([str(p)])
            assert not any(b.by_range for b in sources.split(f, sources.file_stats(f), 5, "fp"))
    # a row count cached before row groups were recorded: read as a stream
    [f] = sources.discover([str(write_all(tmp_path)["parquet"])])
    assert not any(b.by_range for b in sources.split(f, {"rows": 23}, 7, "fp"))
