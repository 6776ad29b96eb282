"""End to end on a real local Ray: run, skip, downstream reruns, integrity, kill -9."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import processes
from tests.conftest import ROOT, run_args, run_cli, run_json
from winnow import api
from winnow.request import RunRequest
from winnow.storage.artifacts import ArtifactStore

pytestmark = pytest.mark.slow
SETS = ["batch_rows=500"]


def session(tmp: Path, inputs: list[str], sets: list[str] = ()):
    return api.resolve_session(
        RunRequest(
            "demo", "local-cpu", inputs, str(tmp / "out"), str(tmp / "state"), [*SETS, *sets]
        )
    )


def digests(record: dict) -> list[str]:
    manifest = api.read_manifest(record["manifest"])
    return [e["artifact"]["digest"] for e in manifest["batches"]]


def test_run_then_rerun_skips_everything(local_ray, tmp_path, demo_inputs, monkeypatch):
    monkeypatch.chdir(ROOT)
    first = api.execute(session(tmp_path, demo_inputs))
    assert first["status"] == "SUCCEEDED"
    counts = first["counts"]
    assert counts["normalize"]["run"] == 9 and counts["normalize"]["skipped"] == 0
    assert first["rows_in"] == 4500 and 0 < first["rows_out"] < counts["quality"]["rows_in"]
    assert first["bad_records"] > 0  # the sample data carries malformed lines, quarantined
    table = api.output_table(first)
    assert table.num_rows == first["rows_out"]
    assert len(set(table.column("id").to_pylist())) == table.num_rows
    assert table.schema.field("embedding").type.list_size == 64

    second = api.execute(session(tmp_path, demo_inputs))
    assert second["status"] == "SUCCEEDED" and second["skipped_fraction"] == 1.0
    assert all(c["run"] == 0 for c in second["counts"].values())
    assert digests(second) == digests(first)
    assert second["rows_out"] == first["rows_out"]
    assert second["delta"] == {"normalize": {}, "quality": {}, "embed": {}}
    assert first["state_after"]["embed"] == {"SUCCEEDED": 9}

    # the job records and events are there for the audit trail
    jobs = api.open_state(str(tmp_path / "state")).list_jobs()
    assert [j["job_id"] for j in jobs] == [second["job_id"], first["job_id"]]
    events = list((tmp_path / "state" / "events").glob("*.jsonl"))
    kinds = {json.loads(line)["type"] for f in events for line in f.read_text().splitlines()}
    assert {"job_started", "checkpoint", "job_finished"} <= kinds


def test_parameter_change_reruns_that_stage_and_downstream_only(
    local_ray, tmp_path, demo_inputs, monkeypatch
):
    monkeypatch.chdir(ROOT)
    base = api.execute(session(tmp_path, demo_inputs))
    changed = session(tmp_path, demo_inputs, ["quality.min_words=20"])
    the_plan = api.plan(changed).to_dict()
    by_stage = {s["name"]: s for s in the_plan["stages"]}
    assert by_stage["normalize"]["skip"] == 9 and by_stage["normalize"]["run"] == 0
    assert by_stage["quality"]["run"] == 9 and by_stage["embed"]["run"] == 9
    assert by_stage["quality"]["reasons"] == {"quality parameter min_words 8 -> 20": 9}
    assert by_stage["embed"]["reasons"] == {"upstream stage quality changed": 9}
    rec = api.execute(changed)
    assert rec["counts"]["normalize"]["run"] == 0 and rec["counts"]["normalize"]["skipped"] == 9
    assert rec["counts"]["quality"]["run"] == 9 and rec["counts"]["embed"]["run"] == 9
    assert rec["rows_out"] < base["rows_out"]


def test_identical_output_bytes_are_stored_once(local_ray, tmp_path, demo_inputs, monkeypatch):
    monkeypatch.chdir(ROOT)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(Path(demo_inputs[0]).read_bytes())
    rec = api.execute(session(tmp_path, [demo_inputs[0], str(copy)]))
    found = digests(rec)
    assert len(found) == 6 and len(set(found)) == 3
    store = ArtifactStore(str(tmp_path / "out" / "artifacts"))
    assert set(found) <= set(store.sizes())


def test_flipped_byte_is_caught_by_verify_full_and_recomputed(
    local_ray, tmp_path, demo_inputs, monkeypatch
):
    monkeypatch.chdir(ROOT)
    first = api.execute(session(tmp_path, demo_inputs))
    manifest = api.read_manifest(first["manifest"])
    victim = manifest["batches"][4]["artifact"]
    path = Path(victim["uri"])
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))

    # a size-only rerun cannot see a flipped byte; --verify full can
    the_plan = api.plan(session(tmp_path, demo_inputs), verify="full").to_dict()
    embed = next(s for s in the_plan["stages"] if s["name"] == "embed")
    assert embed["run"] == 1 and embed["reasons"]["artifact failed verification"] == 1

    proc = run_cli("verify", "--full", "--state", str(tmp_path / "state"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISMATCH" in proc.stdout and "1 mismatches" in proc.stdout

    again = api.execute(session(tmp_path, demo_inputs))
    assert again["counts"]["embed"]["run"] == 1 and again["counts"]["quality"]["run"] == 0
    assert digests(again) == digests(first)
    assert (
        api.open_state(str(tmp_path / "state"))
        and run_cli("verify", "--full", "--state", str(tmp_path / "state")).returncode == 0
    )


def test_run_verify_full_recomputes_a_damaged_artifact(
    local_ray, tmp_path, demo_inputs, monkeypatch
):
    monkeypatch.chdir(ROOT)
    first = api.execute(session(tmp_path, demo_inputs))
    victim = api.read_manifest(first["manifest"])["batches"][0]["artifact"]
    path = Path(victim["uri"])
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x10
    path.write_bytes(bytes(data))
    again = api.execute(session(tmp_path, demo_inputs), verify="full")
    assert again["status"] == "SUCCEEDED" and again["counts"]["embed"]["run"] == 1
    assert digests(again) == digests(first)
    pq.read_table(path)  # repaired in place


def test_sigkill_of_the_driver_then_rerun_gives_identical_output(tmp_path, demo_inputs):
    args = run_args("demo", tmp_path, demo_inputs, "batch_rows=300", profile="local-cpu")
    clean = run_json(
        *run_args(
            "demo",
            tmp_path,
            demo_inputs,
            "batch_rows=300",
            profile="local-cpu",
            state="clean-state",
            output="clean-out",
        )
    )
    segments = tmp_path / "state" / "stages" / "embed" / "segments"
    proc = processes.start_until(args, processes.has_files(segments), timeout=240, step=0.05)
    processes.kill_group(proc)  # the driver and the Ray it started
    time.sleep(1)
    resumed = run_json(*args)
    assert resumed["status"] == "SUCCEEDED"
    assert resumed["counts"]["normalize"]["skipped"] > 0  # committed work was kept
    assert digests(resumed) == digests(clean)
    clean_t = api.output_table(clean)
    resumed_t = api.output_table(resumed)
    assert resumed_t.equals(clean_t)
    ids = resumed_t.column("id").to_pylist()
    assert len(ids) == len(set(ids))


def test_cli_run_json_and_rerun(tmp_path, demo_inputs):
    args = run_args("demo", tmp_path, demo_inputs[:1], "batch_rows=1000", profile="local-cpu")
    first = run_json(*args)
    assert set(first) >= {"job_id", "status", "counts", "rows_in", "rows_out", "manifest"}
    assert first["status"] == "SUCCEEDED" and first["counts"]["embed"]["run"] == 2
    proc = run_cli(*args)
    assert proc.returncode == 0
    assert "100% of stage batches skipped" in proc.stdout and first["job_id"] not in proc.stdout


def test_every_input_row_is_accounted_for(local_ray, tmp_path, demo_inputs, monkeypatch):
    monkeypatch.chdir(ROOT)
    first = api.execute(session(tmp_path, demo_inputs))
    total = first["accounting"]["total"]
    assert total["read"] == 4500 and total["unaccounted"] == 0
    assert total["quarantined"] == first["bad_records"] > 0
    assert total["passed"] == first["rows_out"]
    assert total["filtered_by_stage"]["quality"] > 0
    assert set(first["accounting"]["files"]) == {f"file://{p}" for p in demo_inputs} or len(
        first["accounting"]["files"]
    ) == len(demo_inputs)
    for rows in first["accounting"]["files"].values():
        assert rows["unaccounted"] == 0 and rows["read"] == 1500
    again = api.execute(session(tmp_path, demo_inputs))  # all skipped: the same accounting
    assert again["accounting"] == first["accounting"]
