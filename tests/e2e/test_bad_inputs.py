"""Issue 22 proofs through the real CLI: inputs that used to vanish, hang or spill
a traceback now end clearly (trust contract 3: every input row is accounted for)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import one_json, run_cli, run_json
from winnow import api
from winnow.tools.quarantine import quarantined


def _args(tmp_path: Path, *inputs: Path) -> list[str]:
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    paths = [a for p in inputs for a in ("--input", str(p))]
    return ["run", "demo", "--profile", "local-cpu", *paths, *where]


@pytest.mark.slow
def test_a_parquet_file_of_another_schema_is_refused_naming_its_columns(tmp_path: Path):
    """It used to run to SUCCEEDED with rows_in 3, rows_out 0 and no bad record: its
    rows were filled with nulls and the quality filter dropped them."""
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"foo": [1, 2, 3], "bar": ["a", "b", "c"]}), path)
    done = run_cli(*_args(tmp_path, path))
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr
    assert "missing columns id, url, text, source" in done.stderr
    assert "extra columns foo, bar" in done.stderr  # the order the file has them
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "jobs").exists()  # nothing was recorded


def test_a_parquet_value_that_does_not_fit_its_column_is_quarantined(tmp_path: Path):
    """A file of the right columns with one uncastable value: that row alone is set aside."""
    path = tmp_path / "y.parquet"
    rows = {
        "id": ["1", "two", "3"],
        "url": ["u1", "u2", "u3"],
        "text": ["a b c d e f g h i j k l", "x", "m n o p q r s t u v w x"],
        "source": ["s", "s", "s"],
    }
    pq.write_table(pa.table(rows), path)
    record = run_json(*_args(tmp_path, path))
    total = record["accounting"]["total"]
    assert total["read"] == 3 and total["quarantined"] == 1 and total["unaccounted"] == 0
    bad = quarantined(api.open_state(str(tmp_path / "state"))).to_pylist()
    assert [b["row"] for b in bad] == [2] and str(path) == bad[0]["file"]


@pytest.mark.slow
def test_a_fifo_input_is_refused_at_once_and_writes_nothing(tmp_path: Path):
    """It used to hang planning forever (opening a FIFO waits for a writer)."""
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    began = time.monotonic()
    done = run_cli(*_args(tmp_path, fifo), timeout=90)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - began < 60
    assert str(fifo) in done.stderr and "FIFO" in done.stderr and "regular file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()


def _doc(i: int) -> str:
    return f"{i},https://x.example/{i},this is document number {i} about sorting web text well,t"


@pytest.mark.slow
def test_a_ragged_csv_quarantines_its_bad_rows_and_passes_the_rest(tmp_path: Path):
    """It used to refuse the whole file, with an 'Exception ignored' traceback."""
    lines = ["id,url,text,source"]
    good, ragged = [], {}
    for i in range(12):
        if i in (2, 5, 11):  # a field too many, too few, and the last row
            row = f"{i},https://x.example/{i},extra,field,here" if i != 5 else f"{i},only"
            ragged[i + 2] = row  # the header is row 1
        else:
            row = _doc(i)
            good.append(i)
        lines.append(row)
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n")

    done = run_cli(*_args(tmp_path, path), "--set", "batch_rows=4", "--json")
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
    record = one_json(done.stdout)
    assert record["status"] == "SUCCEEDED"
    passed = record["counts"]["normalize"]["rows_in"]
    assert record["rows_in"] == 12 == passed + record["bad_records"]
    assert passed == len(good) and record["bad_records"] == len(ragged)
    bad = quarantined(api.open_state(str(tmp_path / "state"))).to_pylist()
    assert {b["row"]: b["raw"] for b in bad} == ragged
    assert all(b["file"] == str(path) and b["error"].startswith("RaggedRow") for b in bad)
    assert api.output_table(record).column("id").to_pylist() == good
