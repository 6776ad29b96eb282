"""`verify` covers everything the state references, and state damage stays local.

Issue 22, holes 4 and 5, on a real local Ray through the real command line: a
flipped byte in a quarantine artifact is found by `verify --full`, marked, and
recomputed by the next run; a garbage line in a checkpoint segment costs the
batch it described, is reported with file and line, and `verify --repair`
mends it after a backup. The same checks on a state built by hand (memory,
file and S3): tests/tools/test_verify.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import ROOT, run_cli, run_json
from winnow import api
from winnow.records import BatchStatus
from winnow.request import RunRequest
from winnow.tools.quarantine import quarantined

SETS = ["batch_rows=500"]


def session(tmp: Path, inputs: list[str]):
    return api.resolve_session(
        RunRequest("demo", "local-cpu", inputs, str(tmp / "out"), str(tmp / "state"), SETS)
    )


def runs(record: dict) -> dict[str, int]:
    return {stage: c["run"] for stage, c in record["counts"].items()}


def digests(record: dict) -> list[str]:
    return [e["artifact"]["digest"] for e in api.read_manifest(record["manifest"])["batches"]]


def rows(table: pa.Table) -> list[tuple]:
    return sorted((r["file"], r["row"], r["error"]) for r in table.to_pylist())


@pytest.mark.slow
def test_a_damaged_quarantine_artifact_is_verified_marked_and_recomputed(
    local_ray, tmp_path, demo_inputs, monkeypatch
):
    monkeypatch.chdir(ROOT)
    where = ["--state", str(tmp_path / "state")]
    first = api.execute(session(tmp_path, demo_inputs))
    assert first["status"] == "SUCCEEDED" and first["bad_records"] > 0
    state = api.open_state(str(tmp_path / "state"))
    expected = rows(quarantined(state))
    assert len(expected) == first["bad_records"]
    stage = next(iter(first["counts"]))
    key, rec = next(
        (k, r) for k, r in state.checkpoints().load(stage).records.items() if r.get("quarantine")
    )
    ref = rec["quarantine"]["artifact"]
    path = Path(ref["uri"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    broken = run_cli("inspect", "quarantine", *where)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    message = " ".join(broken.stderr.split())
    assert f"batch {key[:16]}" in message and "winnow verify --full" in message
    assert run_json("verify", *where)["mismatches"] == []  # size-only cannot see a flip
    result = run_json("verify", "--full", *where, expect=1)
    [problem] = result["mismatches"]
    assert (problem["stage"], problem["key"], problem["artifact"]) == (stage, key, "quarantine")
    assert problem["uri"] == ref["uri"] and "sha256" in problem["problem"]
    marked = state.checkpoints().load(stage).records[key]
    assert marked["status"] == BatchStatus.FAILED and marked["error"]["type"] == "IntegrityError"

    again = api.execute(session(tmp_path, demo_inputs))
    assert again["status"] == "SUCCEEDED"
    assert runs(again) == {s: int(s == stage) for s in first["counts"]}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref["digest"]
    assert digests(again) == digests(first)
    shown = run_json("inspect", "quarantine", "--limit", "1000", *where)
    assert rows(pa.Table.from_pylist(shown["records"])) == expected
    assert run_json("verify", "--full", *where)["mismatches"] == []


@pytest.mark.slow
def test_a_garbage_line_in_a_segment_costs_only_its_batch_and_is_repaired(
    local_ray, tmp_path, demo_inputs, monkeypatch
):
    monkeypatch.chdir(ROOT)
    where = ["--state", str(tmp_path / "state")]
    first = api.execute(session(tmp_path, demo_inputs))
    assert first["status"] == "SUCCEEDED"
    segments = sorted((tmp_path / "state" / "stages").glob("*/segments/*.jsonl"))
    segment = max(segments, key=lambda p: len(p.read_bytes().splitlines()))
    stage = segment.parent.parent.name
    lines = segment.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2, "every segment holds one record: no middle line to damage"
    middle = (len(lines) + 1) // 2  # 1-based, never the last line
    lost = json.loads(lines[middle - 1])["key"]
    lines[middle - 1] = b'{"stage": "' + stage.encode() + b'", "key": \x00\xff garbage\n'
    damaged = b"".join(lines)
    segment.write_bytes(damaged)
    jobs = tmp_path / "state" / "jobs"
    (jobs / "torn.json").write_bytes(b'{"job_id": "torn", "sta')
    here = f"{segment}:{middle}"

    status = run_cli("status", *where)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    text = "".join(status.stdout.split())  # rich may wrap a long path
    assert "".join(here.split()) in text and "verify--repair" in text
    assert str(jobs / "torn.json") in text
    damage = run_json("status", *where)["damage"]
    assert len(damage) == 2 and f"{jobs / 'torn.json'}: not JSON" in " ".join(damage)
    assert any(d.startswith(f"{here}: not JSON") for d in damage)
    verify = run_cli("verify", *where)
    assert verify.returncode == 1 and "Traceback" not in verify.stderr, verify.stderr
    assert "DAMAGED" in verify.stdout and "".join(here.split()) in "".join(verify.stdout.split())
    assert run_cli("jobs", *where).returncode == 0

    notes: list[str] = []
    again = api.execute(session(tmp_path, demo_inputs), notify=notes.append)
    assert again["status"] == "SUCCEEDED"
    assert any("damaged checkpoint line" in n for n in notes)  # the run says why it reruns
    assert any(here in n for n in notes)
    assert runs(again) == {s: int(s == stage) for s in first["counts"]}
    assert lost in api.open_state(str(tmp_path / "state")).checkpoints().load(stage).records
    assert digests(again) == digests(first)
    assert segment.read_bytes() == damaged  # the run's compaction left it for repair

    repaired = run_json("verify", "--repair", *where, expect=1)
    assert {r["file"] for r in repaired["repairs"]} == {str(segment), str(jobs / "torn.json")}
    [backup] = (tmp_path / "state" / "backups").glob(f"repair-*/stages/{stage}/segments/*")
    assert backup.name == segment.name and backup.read_bytes() == damaged
    assert segment.read_bytes() == b"".join(lines[: middle - 1] + lines[middle:])
    assert not (jobs / "torn.json").exists()
    clean = run_json("verify", "--full", *where)
    assert clean["damage"] == [] and clean["mismatches"] == [] and clean["manifest_problems"] == []
    assert run_json("status", *where)["damage"] == []
    final = api.execute(session(tmp_path, demo_inputs))
    assert final["skipped_fraction"] == 1.0
