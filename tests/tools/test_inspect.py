"""The run log reads in pipeline order, not alphabetical order."""

from __future__ import annotations

from winnow.tools.inspect import job_markdown, stage_order

COUNTS = {"run": 1, "skipped": 0, "retried": 0, "failed": 0, "rows_in": 5, "rows_out": 5}


def test_stages_appear_in_pipeline_order() -> None:
    order = ["normalize", "embed", "annotate"]  # not alphabetical
    job = {
        "job_id": "j",
        "stages": [{"name": n} for n in order],
        "counts": {n: COUNTS for n in sorted(order)},
        "state_before": {n: {} for n in sorted(order)},
        "state_after": {n: {"SUCCEEDED": 1} for n in sorted(order)},
        "delta": {n: {"SUCCEEDED": 1} for n in sorted(order)},
    }
    assert stage_order(job) == order
    text = job_markdown({"job": job, "timings": {}})
    for section in text.split("## ")[1:3]:  # the state table and the per-stage table
        rows = [line.split("|")[1].strip() for line in section.splitlines() if line[:2] == "| "]
        assert rows[2:] == order  # after the header and its rule
