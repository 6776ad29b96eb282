"""OpenLineage events of real runs: when they are sent, what they name, and that
lineage never fails a run (and costs nothing when off)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

import winnow
from tests.conftest import run_json
from tests.lineage.runs import FLAKY, ROWS, file_transport, read_events, run_flaky, write_input
from winnow import api, lineage
from winnow.errors import UsageError
from winnow.profile import LineageSettings, Profile, apply_overrides
from winnow.request import RunRequest


def test_a_run_emits_start_then_complete_naming_its_inputs_output_and_stages(
    tmp_path: Path,
) -> None:
    events_file = tmp_path / "events.jsonl"
    result = run_flaky(tmp_path, LineageSettings(transport=file_transport(events_file)))
    assert result.status == "SUCCEEDED"
    start, end = read_events(events_file)
    assert [start["eventType"], end["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == end["run"]["runId"]
    assert uuid.UUID(start["run"]["runId"]).version == 7
    assert datetime.fromisoformat(start["eventTime"]) <= datetime.fromisoformat(end["eventTime"])
    assert end["job"] == {**end["job"], "namespace": "winnow", "name": "flaky"}
    assert end["job"]["facets"]["jobType"]["processingType"] == "BATCH"

    # The input file, named the OpenLineage way, with its identity and the rows read.
    (source,) = end["inputs"]
    assert (source["namespace"], source["name"]) == ("file", str(tmp_path / "in.jsonl"))
    assert len(source["facets"]["version"]["datasetVersion"]) == 64  # the file's identity
    assert [f["name"] for f in source["facets"]["schema"]["fields"]] == ["id", "text"]
    assert source["inputFacets"]["inputStatistics"]["rowCount"] == ROWS

    # The output: the run's manifests, versioned by the job, with the output's schema.
    (output,) = end["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(tmp_path / "out/manifests/flaky"))
    assert output["facets"]["version"]["datasetVersion"] == result.job_id
    assert {f["name"]: f["type"] for f in output["facets"]["schema"]["fields"]} == {
        "id": "int64",
        "text": "string",
    }
    stats = output["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == ROWS and stats["fileCount"] == 3 and stats["size"] > 0

    # Run facets: the Winnow job, and per stage its fingerprint, batches and rows.
    run_facet = end["run"]["facets"]["winnow_run"]
    assert run_facet["jobId"] == result.job_id and run_facet["status"] == "SUCCEEDED"
    assert run_facet["rows"]["read"] == ROWS and run_facet["rows"]["unaccounted"] == 0
    assert end["run"]["facets"]["processing_engine"]["name"] == "Winnow"
    stages = end["run"]["facets"]["winnow_stages"]["stages"]
    recorded = {s["name"]: s for s in result.record["stages"]}
    assert [s["name"] for s in stages] == ["flaky", "upper"]
    for stage in stages:
        assert stage["fingerprint"] == recorded[stage["name"]]["fingerprint"]
        assert stage["codeDigest"] == recorded[stage["name"]]["code"]
        assert stage["batches"] == {"run": 3, "skipped": 0, "retried": 0, "failed": 0}
        assert (stage["rowsIn"], stage["rowsOut"], stage["filtered"]) == (ROWS, ROWS, 0)
    # At the start: what the plan will run; no output version yet.
    planned = start["run"]["facets"]["winnow_stages"]["stages"][0]
    assert planned["planned"] == {"run": 3, "retry": 0, "skip": 0} and "batches" not in planned
    assert "version" not in start["outputs"][0]["facets"]
    assert "errorMessage" not in end["run"]["facets"]


def test_data_in_memory_is_named_by_its_chunks_digests(tmp_path: Path) -> None:
    # Named by place (namespace "inmemory://chunk-000000", name "/"), every in-memory
    # input of every pipeline was one dataset to a lineage backend.
    events_file = tmp_path / "events.jsonl"
    profile = Profile(batch_rows=20, lineage=LineageSettings(transport=file_transport(events_file)))
    data = pa.table({"id": pa.array(range(ROWS), pa.int64()), "text": ["t"] * ROWS})
    winnow.run(
        FLAKY, input=data, profile=profile, state=str(tmp_path / "state"),
        output=str(tmp_path / "out"), executor="local", progress=False,
    )  # fmt: skip
    _, end = read_events(events_file)
    artifacts = tmp_path / "out" / "artifacts" / "sha256"
    names = [(source["namespace"], source["name"]) for source in end["inputs"]]
    assert len(names) == 3 and len(set(names)) == 3
    for namespace, name in names:  # each chunk's artifact, named by the SHA-256 of its bytes
        digest = hashlib.sha256(Path(name).read_bytes()).hexdigest()
        assert (namespace, name) == ("file", str(artifacts / digest[:2] / f"{digest}.arrow"))
    assert sum(s["inputFacets"]["inputStatistics"]["rowCount"] for s in end["inputs"]) == ROWS


def test_a_rerun_reports_its_skipped_batches(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    settings = LineageSettings(transport=file_transport(events_file), namespace="team-a")
    run_flaky(tmp_path, settings)
    run_flaky(tmp_path, settings)
    events = read_events(events_file)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"] * 2
    assert events[0]["run"]["runId"] != events[2]["run"]["runId"]
    assert events[3]["job"]["namespace"] == "team-a"
    for stage in events[3]["run"]["facets"]["winnow_stages"]["stages"]:
        assert stage["batches"]["run"] == 0 and stage["batches"]["skipped"] == 3
        assert stage["rowsOut"] == ROWS


def test_a_failing_run_emits_fail_with_its_error(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    marks = tmp_path / "marks"
    marks.mkdir()
    sets = ("flaky.fail_mod=20", "flaky.fail_times=5", f"flaky.marks={marks}")
    result = run_flaky(tmp_path, LineageSettings(transport=file_transport(events_file)), sets)
    assert result.status == "FAILED"
    start, end = read_events(events_file)
    assert (start["eventType"], end["eventType"]) == ("START", "FAIL")
    error = end["run"]["facets"]["errorMessage"]
    assert "RuntimeError" in error["message"] and "failing on purpose" in error["message"]
    assert error["programmingLanguage"] == "python"
    flaky = end["run"]["facets"]["winnow_stages"]["stages"][0]
    assert flaky["batches"]["failed"] == 3  # ids 0, 20 and 40: every batch holds one


def test_a_stopped_run_emits_abort(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    profile = Profile(batch_rows=20, lineage=LineageSettings(transport=file_transport(events_file)))
    request = RunRequest(
        FLAKY, profile, (write_input(tmp_path),), str(tmp_path / "out"), str(tmp_path / "state")
    )
    stop = threading.Event()
    stop.set()  # stopped (SIGTERM to the gateway, Ctrl-C) before a batch ran
    record = api.execute(api.resolve_session(request), stop=stop, executor="local")
    assert record["status"] == "CANCELLED"
    assert [e["eventType"] for e in read_events(events_file)] == ["START", "ABORT"]


def test_openlineage_configured_in_the_environment_turns_lineage_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "events.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(events_file))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    run_flaky(tmp_path)
    assert [e["eventType"] for e in read_events(events_file)] == ["START", "COMPLETE"]
    # enabled = false (--no-lineage) wins over the environment.
    events_file.unlink()
    run_flaky(tmp_path, LineageSettings(enabled=False))
    assert not events_file.exists()


def test_when_lineage_is_on() -> None:
    off, auto, on = (LineageSettings(enabled=v) for v in (False, None, True))
    assert not lineage.is_on(auto, {})
    assert lineage.is_on(auto, {"OPENLINEAGE_URL": "http://127.0.0.1:5000"})
    assert lineage.is_on(auto, {"OPENLINEAGE__TRANSPORT__TYPE": "console"})
    assert lineage.is_on(auto, {"OPENLINEAGE_CONFIG": "/etc/openlineage.yml"})
    assert lineage.is_on(LineageSettings(transport={"type": "console"}), {})
    assert lineage.is_on(on, {})
    assert not lineage.is_on(off, {"OPENLINEAGE_URL": "http://127.0.0.1:5000"})
    assert not lineage.is_on(on, {"OPENLINEAGE_DISABLED": "true"})


def test_an_openlineage_yml_in_the_working_directory_turns_lineage_on(tmp_path: Path) -> None:
    assert not lineage.environment_configured({})
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert lineage.environment_configured({})


def test_set_lineage_and_the_profile_table() -> None:
    profile = Profile(lineage=LineageSettings(namespace="n", transport={"type": "console"}))
    changed = apply_overrides(profile, ["lineage=true"])
    assert changed.lineage == LineageSettings(
        enabled=True, namespace="n", transport=profile.lineage.transport
    )
    assert apply_overrides(profile, ["lineage=false"]).lineage.enabled is False
    secret = Profile(lineage=LineageSettings(transport={"type": "http", "auth": {"apiKey": "s3"}}))
    assert "s3" not in json.dumps(secret.redacted())


def test_a_broken_transport_warns_once_and_the_run_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = {"type": "http", "url": f"http://127.0.0.1:{port}", "retry": {"total": 0}}
    result = run_flaky(tmp_path, LineageSettings(transport=transport))
    assert result.status == "SUCCEEDED" and result.record["rows_out"] == ROWS
    warnings = [line for line in capsys.readouterr().err.splitlines() if "lineage:" in line]
    assert len(warnings) == 1, warnings
    assert f"job {result.job_id}" in warnings[0] and "START" in warnings[0]


def test_a_backend_that_never_answers_holds_a_run_up_only_wait_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Connections are accepted (the backlog) but never answered: each HTTP try waits out
    # its 5 s timeout, then retries; a run used to wait for all of them (40 s, not 1 s).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        settings = LineageSettings(transport={"type": "http", "url": url}, wait_s=0.5)
        started = time.monotonic()
        result = run_flaky(tmp_path, settings)
        took = time.monotonic() - started
    assert result.status == "SUCCEEDED" and result.record["rows_out"] == ROWS
    assert took < 4.5, f"the run took {took:.1f} s"  # the transport's first try alone: 5 s
    warnings = [line for line in capsys.readouterr().err.splitlines() if "lineage:" in line]
    assert len(warnings) == 1 and "START" in warnings[0], warnings
    assert "no answer within [lineage] wait_s = 0.5 s" in warnings[0]


def test_a_bad_transport_config_warns_and_the_run_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_flaky(tmp_path, LineageSettings(transport={"type": "no-such-transport"}))
    assert result.status == "SUCCEEDED"
    assert "lineage: could not set up OpenLineage" in capsys.readouterr().err


NOT_CONFIGURED = """
import json, sys
import winnow
from winnow.profile import Profile
result = winnow.run(
    sys.argv[1], profile=Profile(batch_rows=20), inputs=[sys.argv[2]], state=sys.argv[3],
    output=sys.argv[4], executor="local", progress=False,
)
print(json.dumps({
    "status": result.status,
    "imported": sorted(m for m in sys.modules if m.split(".")[0] == "openlineage"),
}))
"""


@pytest.mark.slow
def test_not_configured_sends_nothing_and_never_imports_openlineage(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env["HOME"] = str(tmp_path / "home")
    args = [FLAKY, write_input(tmp_path), str(tmp_path / "state"), str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-c", NOT_CONFIGURED, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"status": "SUCCEEDED", "imported": []}
    assert "lineage" not in proc.stderr


def test_lineage_asked_for_without_the_extra_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The extra missing, as on an install without winnow[lineage].
    monkeypatch.setitem(sys.modules, "openlineage", None)
    monkeypatch.setitem(sys.modules, "openlineage.client", None)
    with pytest.raises(UsageError, match="'lineage' extra"):
        run_flaky(tmp_path, LineageSettings(enabled=True))
    assert not list((tmp_path / "state").glob("jobs/*.json"))


@pytest.mark.slow
def test_winnow_run_lineage_with_an_openlineage_yml(tmp_path: Path) -> None:
    """``--lineage`` with the transport in OpenLineage's own config file; stdout stays one
    JSON object; ``--no-lineage`` sends nothing though the config is there."""
    events_file = tmp_path / "events.jsonl"
    config = tmp_path / "ol.yml"
    config.write_text(f"transport:\n  type: file\n  log_file_path: {events_file}\n  append: true\n")
    env = {"OPENLINEAGE_CONFIG": str(config), "HOME": str(tmp_path / "home")}
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    inputs = ["--input", write_input(tmp_path), "--set", "batch_rows=20"]
    common = ["run", FLAKY, "--executor", "local", *where, *inputs]
    record = run_json(*common, "--no-lineage", env=env)
    assert record["status"] == "SUCCEEDED" and not events_file.exists()
    record = run_json(*common, "--lineage", "--rerun", "upper", env=env)
    end = read_events(events_file)[-1]
    assert end["eventType"] == "COMPLETE"
    assert end["run"]["facets"]["winnow_run"]["jobId"] == record["job_id"]
    upper = end["run"]["facets"]["winnow_stages"]["stages"][1]
    assert upper["batches"]["run"] == 3


def test_lineage_on_by_environment_without_the_extra_warns_and_the_run_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "openlineage", None)
    monkeypatch.setitem(sys.modules, "openlineage.client", None)
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
    result = run_flaky(tmp_path)
    assert result.status == "SUCCEEDED"
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "lineage:" in line]
    assert "'lineage' extra" in warning
