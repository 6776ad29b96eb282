"""An export's own OpenLineage run: the job's output in, the exported table out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lineage.runs import ROWS, file_transport, read_events, run_flaky
from winnow import api
from winnow.profile import LineageSettings
from winnow.tools.export import export


def test_an_export_is_a_run_whose_parent_is_the_exported_job(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    result = run_flaky(tmp_path, LineageSettings(transport=file_transport(events_file)))
    target = tmp_path / "exports" / "flaky.parquet"
    export(api.open_state(str(tmp_path / "state")), result.job_id, str(target))
    run_start, run_end, start, end = read_events(events_file)
    assert (start["eventType"], end["eventType"]) == ("START", "COMPLETE")
    assert start["run"]["runId"] == end["run"]["runId"] != run_end["run"]["runId"]
    assert end["job"]["name"] == "flaky.export"
    assert end["job"]["facets"]["jobType"]["jobType"] == "EXPORT"
    parent = end["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == run_start["run"]["runId"]
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("winnow", "flaky")
    # Its input is the run's output dataset, at the version the run wrote.
    (source,) = end["inputs"]
    (produced,) = run_end["outputs"]
    assert (source["namespace"], source["name"]) == (produced["namespace"], produced["name"])
    assert source["facets"]["version"] == produced["facets"]["version"]
    (table,) = end["outputs"]
    assert (table["namespace"], table["name"]) == ("file", str(target))
    assert table["outputFacets"]["outputStatistics"]["rowCount"] == ROWS
    assert table["outputFacets"]["outputStatistics"]["size"] == target.stat().st_size
    assert [f["name"] for f in table["facets"]["schema"]["fields"]] == ["id", "text"]


def test_an_export_follows_its_jobs_lineage_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "events.jsonl"
    result = run_flaky(tmp_path, LineageSettings(enabled=False))  # --no-lineage
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(events_file))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    state = api.open_state(str(tmp_path / "state"))
    export(state, result.job_id, str(tmp_path / "a.parquet"))
    assert not events_file.exists()
    # The same run with lineage left to the environment: the run and its export are sent.
    (tmp_path / "auto").mkdir()
    auto = run_flaky(tmp_path / "auto")
    state = api.open_state(str(tmp_path / "auto" / "state"))
    export(state, auto.job_id, str(tmp_path / "b.parquet"))
    assert [e["job"]["name"] for e in read_events(events_file)] == [
        "flaky",
        "flaky",
        "flaky.export",
        "flaky.export",
    ]


@pytest.mark.parametrize("fmt", ["delta", "iceberg", "lance"])
def test_a_table_export_is_a_run_naming_the_table(tmp_path: Path, fmt: str) -> None:
    # Table exports sent no events at all: only Parquet/JSONL exports did.
    events_file = tmp_path / "events.jsonl"
    result = run_flaky(tmp_path, LineageSettings(transport=file_transport(events_file)))
    to = tmp_path / f"{fmt}-table"
    state = api.open_state(str(tmp_path / "state"))
    for _ in range(2):  # the second adds nothing, and says so
        export(state, result.job_id, str(to), fmt)
    run_start, _, *exports = read_events(events_file)
    assert [e["eventType"] for e in exports] == ["START", "COMPLETE"] * 2
    for end, rows in ((exports[1], ROWS), (exports[3], 0)):
        assert end["job"]["name"] == "flaky.export"
        assert end["run"]["facets"]["parent"]["run"]["runId"] == run_start["run"]["runId"]
        (table,) = end["outputs"]
        name = str(to) if fmt != "iceberg" else f"{to}/warehouse/winnow/flaky"
        assert (table["namespace"], table["name"]) == ("file", name)
        assert table["facets"]["storage"]["storageLayer"] == fmt
        assert table["outputFacets"]["outputStatistics"]["rowCount"] == rows
