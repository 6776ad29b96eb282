from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import zstandard

from winnow import sources
from winnow.errors import InputError

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


# --- bad inputs (issue 22): every one ends clearly, through the real reader path ---


def _read_all(path: Path, schema: pa.Schema | None = SCHEMA, batch_rows: int = 1000):
    [f] = sources.discover([str(path)])
    stats = sources.file_stats(f, schema=schema)
    ranges = [(b.start, b.stop) for b in sources.split(f, stats, batch_rows, "fp")]
    out = list(sources.read(f, ranges, schema))
    for (start, stop), (batch, bad) in zip(ranges, out, strict=True):
        assert batch.num_rows + len(bad) == stop - start  # rows read = passed on + set aside
        first = 2 if f.format == "csv" else 1  # a CSV's header is its row 1
        assert all(start <= b.row - first < stop for b in bad)  # in the batch that holds it
    return stats, out


@pytest.mark.parametrize("how", ["named", "folder", "glob"])
def test_a_fifo_is_refused_by_name_without_being_opened(tmp_path: Path, how: str):
    (tmp_path / "ok.jsonl").write_bytes(b'{"id": 1}\n')
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    target = {"named": fifo, "folder": tmp_path, "glob": tmp_path / "*.jsonl"}[how]
    with pytest.raises(InputError, match="FIFO") as err:  # opening it would block forever
        sources.discover([str(target)])
    assert str(fifo) in str(err.value) and "regular file" in str(err.value)


def test_a_character_device_named_directly_is_refused(tmp_path: Path):
    with pytest.raises(InputError, match="character device"):
        sources.discover(["/dev/null"])


def _ragged_csv(rows: int) -> tuple[bytes, list[int], list[int]]:
    """A CSV whose every 7th row has a field too many and every 11th one too few;
    some values span two lines. Returns it, the good ids and the ragged rows' numbers."""
    lines, good, ragged = [b"id,text"], [], []
    for i in range(rows):
        if i % 7 == 3:
            lines.append(b"%d,x,extra" % i)
            ragged.append(i + 2)  # the header is row 1
        elif i % 11 == 5:
            lines.append(b"%d" % i)
            ragged.append(i + 2)
        else:
            text = b'"two\nlines"' if i % 13 == 0 else b"row %d" % i
            lines.append(b"%d,%s" % (i, text))
            good.append(i)
    return b"\n".join(lines) + b"\n", good, ragged


@pytest.mark.parametrize("schema", [SCHEMA, None])
def test_a_ragged_csv_sets_its_bad_rows_aside_in_the_batch_that_holds_them(
    tmp_path: Path, schema: pa.Schema | None
):
    # ~2 MB: several of Arrow's 1 MiB blocks, so ragged rows are found across blocks
    data, good, ragged = _ragged_csv(60_000)
    path = tmp_path / "ragged.csv"
    path.write_bytes(data)
    stats, out = _read_all(path, schema, batch_rows=7_000)
    assert stats["rows"] == 60_000  # ragged rows are rows: counted, then set aside
    ids = [int(i) for batch, _ in out for i in batch.column("id").to_pylist()]
    assert ids == good
    bad = [b for _, bad in out for b in bad]
    assert [b.row for b in bad] == ragged
    assert all(b.file == str(path) and b.error.startswith("RaggedRow: expected 2") for b in bad)
    assert bad[0].raw == "3,x,extra" and bad[1].raw == "5"


def test_a_ragged_csv_prints_no_traceback(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_bytes(b"id,text\n1,a\n2,b,c\n3\n4,d\n")
    script = (
        "import sys; from winnow import sources\n"
        "[f] = sources.discover([sys.argv[1]]); n = sources.file_stats(f)['rows']\n"
        "print(n, [(b.num_rows, len(bad)) for b, bad in sources.read(f, [(0, n)], None)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "4 [(2, 2)]"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_csv_blank_lines_are_not_rows_and_a_header_naming_a_column_twice_is_refused(
    tmp_path: Path,
):
    path = tmp_path / "blank.csv"
    path.write_bytes(b"\n\nid,text\n1,a\n\n2\n3,c\n")
    stats, [(batch, bad)] = _read_all(path)
    assert stats["rows"] == 3 and batch.column("id").to_pylist() == [1, 3]
    assert [(b.row, b.raw) for b in bad] == [(3, "2")]  # as Arrow numbers it: header = 1
    path.write_bytes(b"id,id,text\n1,2,a\n")
    [f] = sources.discover([str(path)])
    with pytest.raises(InputError, match="columns named more than once id"):
        sources.file_stats(f, schema=SCHEMA)


def test_a_csv_value_of_the_wrong_type_or_invalid_utf8_costs_its_row_only(tmp_path: Path):
    path = tmp_path / "values.csv"
    path.write_bytes(b'id,text\n1,a\nseven,b\n3,caf\xe9\n4,"d"\n,null id\n6,\n')
    stats, [(batch, bad)] = _read_all(path)
    assert stats["rows"] == 6
    assert batch.to_pylist() == [
        {"id": 1, "text": "a"},
        {"id": 4, "text": "d"},
        {"id": None, "text": "null id"},  # CSV's empty value is null, as Arrow reads it
        {"id": 6, "text": ""},
    ]
    assert [(b.row, b.error.split(":")[0]) for b in bad] == [
        (3, "WrongType"),
        (4, "UnicodeDecodeError"),
    ]
    assert "'id'" in bad[0].error and bad[0].raw == "seven,b"


def test_csv_text_is_cast_like_arrows_csv_reader_would(tmp_path: Path):
    schema = pa.schema(
        [("i", pa.int32()), ("f", pa.float64()), ("b", pa.bool_()), ("t", pa.timestamp("s"))]
    )
    data = b"i,f,b,t\n1,1.5,true,2024-01-02 03:04:05\nNA,nan,0,\n-3,1e3,False,2024-01-02\n"
    path = tmp_path / "types.csv"
    path.write_bytes(data)
    _, [(batch, bad)] = _read_all(path, schema)
    expected = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=dict(zip(schema.names, schema.types, strict=True))
        ),
    )
    assert bad == [] and batch.to_pylist() == expected.to_pylist()


@pytest.mark.parametrize("fmt", ["parquet", "ipc", "csv"])
def test_a_file_of_another_schema_is_refused_during_planning(tmp_path: Path, fmt: str):
    table = pa.table({"foo": [1, 2, 3], "bar": ["a", "b", "c"]})
    path = tmp_path / {"parquet": "x.parquet", "ipc": "x.arrow", "csv": "x.csv"}[fmt]
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "ipc":
        with ipc.new_file(str(path), table.schema) as w:
            w.write_table(table)
    else:
        pacsv.write_csv(table, path)
    [f] = sources.discover([str(path)])
    message = (
        f"input {str(path)!r} does not match pipeline schema: missing columns id, text; "
        "extra columns foo, bar. Fix the file or the pipeline's schema."
    )
    with pytest.raises(InputError) as err:
        sources.file_stats(f, schema=SCHEMA)
    assert str(err.value) == message
    with pytest.raises(InputError) as err:
        sources.check_schema(f, SCHEMA)
    assert str(err.value) == message
    # read anyway (a stale row count), every row is set aside with the reason, none dropped
    [(batch, bad)] = list(sources.read(f, [(0, 3)], SCHEMA))
    assert batch.num_rows == 0 and batch.schema == SCHEMA
    assert [b.row for b in bad] == ([2, 3, 4] if fmt == "csv" else [1, 2, 3])
    assert all(b.error.startswith("SchemaMismatch: the file has no column id, text") for b in bad)


def test_extra_columns_alone_are_dropped_and_uncastable_types_are_refused(tmp_path: Path):
    path = tmp_path / "extra.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"], "more": [0.5, 1.5]}), path)
    _, [(batch, bad)] = _read_all(path)
    assert batch.schema == SCHEMA and batch.num_rows == 2 and bad == []
    pq.write_table(pa.table({"id": [[1], [2]], "text": ["a", "b"]}), path)
    [f] = sources.discover([str(path)])
    with pytest.raises(InputError, match=r"id \(list<element: int64> cannot be cast to int64\)"):
        sources.file_stats(f, schema=SCHEMA)


def test_a_parquet_value_that_does_not_cast_costs_its_row_only(tmp_path: Path):
    path = tmp_path / "text-ids.parquet"
    pq.write_table(pa.table({"id": ["1", "two", "3"], "text": ["a", "b", "c"]}), path)
    _, [(batch, bad)] = _read_all(path)
    assert batch.column("id").to_pylist() == [1, 3]
    [b] = bad
    assert b.row == 2 and b.error.startswith("WrongType: column 'id'") and '"two"' in b.raw


def test_a_null_in_a_non_nullable_column_is_a_bad_record_in_every_format(tmp_path: Path):
    strict = pa.schema([pa.field("id", pa.int64(), nullable=False), ("text", pa.string())])
    (tmp_path / "n.jsonl").write_bytes(b'{"id": 1, "text": "a"}\n{"text": "no id"}\n')
    (tmp_path / "n.csv").write_bytes(b"id,text\n1,a\n,no id\n")
    pq.write_table(pa.table({"id": [1, None], "text": ["a", "no id"]}), tmp_path / "n.parquet")
    for name in ("n.jsonl", "n.csv", "n.parquet"):
        _, [(batch, bad)] = _read_all(tmp_path / name, strict)
        assert batch.column("id").to_pylist() == [1], name
        [b] = bad
        assert b.error.startswith("SchemaMismatch") and "id" in b.error and "no id" in b.raw


def test_a_jsonl_record_sharing_no_field_with_the_schema_is_a_bad_record(tmp_path: Path):
    path = tmp_path / "other.jsonl"
    path.write_bytes(
        b'{"id": 1, "text": "a"}\n{"foo": 1, "bar": "x"}\n{}\n{"id": null, "text": null}\n'
        b'{"id": 5}\n'
    )
    _, [(batch, bad)] = _read_all(path)
    assert batch.column("id").to_pylist() == [1, None, 5]  # sharing a field is enough
    assert [b.row for b in bad] == [2, 3]
    assert all(b.error.startswith("SchemaMismatch: the record has none") for b in bad)
    assert "id, text" in bad[0].error and bad[0].raw == '{"foo": 1, "bar": "x"}'


def test_jsonl_lines_that_are_not_objects_or_of_the_wrong_type_are_bad_records(tmp_path: Path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'[1, 2]\n42\n{"id": 3, "text": "ok"}\n{"id": "four", "text": "t"}\n"s"\n')
    _, [(batch, bad)] = _read_all(path)
    assert batch.column("id").to_pylist() == [3]
    assert [(b.row, b.error.split(":")[0]) for b in bad] == [
        (1, "ValueError"),
        (2, "ValueError"),
        (4, "ArrowInvalid"),
        (5, "ValueError"),
    ]
    assert "expected a JSON object, got list" in bad[0].error


def test_a_utf8_bom_is_not_part_of_the_first_record_or_column(tmp_path: Path):
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"id": 1, "text": "a"}\n{"id": 2}\n')
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfid,text\n1,a\n2,\n")
    for name in ("bom.jsonl", "bom.csv"):
        _, [(batch, bad)] = _read_all(tmp_path / name)
        assert batch.column("id").to_pylist() == [1, 2] and bad == [], name


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("empty.csv", b"", "is an empty CSV file"),
        ("empty.parquet", b"", "not a readable parquet file"),
        ("empty.arrow", b"", "not a readable ipc file"),
        ("junk.parquet", b"PAR1" + bytes(range(256)) * 8, "not a readable parquet file"),
        ("junk.arrow", b"ARROW1\x00\x00" + bytes(range(256)) * 8, "not a readable ipc file"),
    ],
)
def test_an_unreadable_file_is_a_named_input_error(
    tmp_path: Path, name: str, data: bytes, says: str
):
    path = tmp_path / name
    path.write_bytes(data)
    [f] = sources.discover([str(path)])
    with pytest.raises(InputError, match=says) as err:
        sources.file_stats(f, schema=SCHEMA)
    assert str(path) in str(err.value) and "out of --input" in str(err.value)


def test_a_parquet_file_cut_short_is_a_named_input_error(tmp_path: Path):
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS, schema=SCHEMA), path)
    path.write_bytes(path.read_bytes()[:-20])  # the footer cut off
    [f] = sources.discover([str(path)])
    with pytest.raises(InputError, match="not a readable parquet file") as err:
        sources.file_stats(f)
    assert str(path) in str(err.value)


def test_an_empty_jsonl_and_a_header_only_csv_hold_no_rows(tmp_path: Path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "header.csv").write_bytes(b"id,text\n")
    for name in ("empty.jsonl", "header.csv"):
        [f] = sources.discover([str(tmp_path / name)])
        assert sources.file_stats(f, schema=SCHEMA) == {"rows": 0}
        assert sources.split(f, {"rows": 0}, 10, "fp") == []
    [f] = sources.discover([str(tmp_path / "header.csv")])
    with pytest.raises(InputError, match="missing columns url"):
        sources.file_stats(f, schema=pa.schema([("id", pa.int64()), ("url", pa.string())]))


def test_the_reader_version_is_part_of_every_source_batch_key(monkeypatch: pytest.MonkeyPatch):
    before = sources.reader_fingerprint(SCHEMA, "quarantine")
    from winnow.sources import files

    monkeypatch.setattr(files, "READER_VERSION", files.READER_VERSION + 1)
    assert sources.reader_fingerprint(SCHEMA, "quarantine") != before
