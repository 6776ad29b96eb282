"""Row accounting: read = passed + filtered + quarantined + in failed batches, per file."""

from __future__ import annotations

from winnow.accounting import Tally


def test_every_row_lands_somewhere():
    tally = Tally(["clean", "filter"])
    first = {"rows_in": 8, "rows_out": 8, "source_rows": 10, "bad_records": 2}
    tally.add_batch("a.jsonl", 0, 10, [first, {"rows_in": 8, "rows_out": 5}])
    tally.add_batch("a.jsonl", 10, 20, [None, None])  # never got through its first stage
    tally.add_batch("b.jsonl", 0, 4, [{"rows_in": 4, "rows_out": 4, "bad_records": 0}, None])
    a, b = tally.files["a.jsonl"], tally.files["b.jsonl"]
    assert (a.read, a.passed, a.quarantined, a.failed, dict(a.filtered)) == (
        20,
        5,
        2,
        10,
        {"clean": 0, "filter": 3},
    )
    assert (b.read, b.passed, b.failed, b.unaccounted) == (4, 0, 4, 0)
    total = tally.to_dict()["total"]
    assert total["unaccounted"] == 0 and total["read"] == 24
    assert total["filtered_by_stage"] == {"filter": 3}


def test_rows_lost_silently_show_as_unaccounted():
    tally = Tally(["only"])
    # The reader yielded 7 of the range's 10 rows and reported no bad records.
    tally.add_batch("x.parquet", 0, 10, [{"rows_in": 7, "rows_out": 7, "bad_records": 0}])
    assert tally.files["x.parquet"].unaccounted == 3
