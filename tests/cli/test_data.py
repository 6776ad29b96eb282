"""The data commands (`winnow status`, `inspect`, `export`, `gc`, `lock`) and `retry`,
against the state of real runs (and a hand-written lock)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli, run_json
from winnow import api


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, demo_inputs: list[str]) -> dict:
    d = tmp_path_factory.mktemp("tools")
    where = ["--state", str(d / "state"), "--output", str(d / "out")]
    inputs = [a for i in demo_inputs for a in ("--input", i)]
    record = run_json(
        "run", "demo", "--profile", "local-cpu", "--set", "batch_rows=700", *where, *inputs
    )
    assert record["status"] == "SUCCEEDED"
    return {"dir": d, "where": where, "inputs": inputs, "record": record}


def cli_json(*args: str, expect: int = 0) -> dict:
    proc = run_cli(*args, "--json")
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout)


def test_status_counts_match_the_job(ran: dict):
    data = cli_json("status", *ran["where"][:2])
    record = ran["record"]
    assert data["queue"]["succeeded"] == 1
    assert data["jobs"][0]["job_id"] == record["job_id"]
    for stage, counts in record["counts"].items():
        assert data["stages"][stage]["succeeded"] == counts["run"]
        assert data["stages"][stage]["rows_out"] == counts["rows_out"]
    assert data["quarantined_records"] == record["bad_records"] > 0
    assert data["failed_batches"] == 0
    quarantine = cli_json("inspect", "quarantine", "--limit", "100", *ran["where"][:2])
    assert len(quarantine["records"]) == record["bad_records"]
    for bad in quarantine["records"]:
        assert bad["file"].endswith((".jsonl", ".jsonl.gz")) and bad["row"] >= 1 and bad["error"]


def test_inspect_job_prints_the_run_log(ran: dict):
    job = ran["record"]["job_id"]
    proc = run_cli("inspect", "job", "--id", job, "--format", "markdown", *ran["where"][:2])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for section in ("# Run log: " + job, "## State before / after / delta", "## Per stage"):
        assert section in text
    for stage in ran["record"]["counts"]:
        assert f"| {stage} |" in text
    missing = run_cli("inspect", "job", "--id", "nope-1", *ran["where"][:2])
    assert missing.returncode == 2 and "winnow jobs" in missing.stderr


def test_inspect_artifact_and_batch_walk_the_lineage(ran: dict):
    manifest = api.read_manifest(ran["record"]["manifest"])
    entry = manifest["batches"][1]
    info = cli_json("inspect", "artifact", entry["artifact"]["digest"][:12], *ran["where"][:2])
    [use] = info["checkpoints"]
    assert [c["stage"] for c in use["chain"]] == ["normalize", "quality", "embed"]
    assert use["chain"][-1]["digest"] == entry["artifact"]["digest"]
    assert use["source"] == entry["source"]
    assert use["job_id"] == ran["record"]["job_id"]
    batch = cli_json("inspect", "batch", entry["batch"], *ran["where"][:2])
    assert {r["stage"] for r in batch["stages"]} == {"normalize", "quality", "embed"}
    assert {e["type"] for e in batch["history"]} == {"checkpoint"}
    bad = run_cli("inspect", "artifact", "../../etc", *ran["where"][:2])
    assert bad.returncode == 2 and "hex" in bad.stderr


def test_export_writes_the_output_in_source_order(ran: dict):
    out = ran["dir"] / "export"
    expected = api.output_table(ran["record"])
    result = cli_json(
        "export", ran["record"]["job_id"], "--to", str(out / "all.parquet"), *ran["where"][:2]
    )
    assert result["rows"] == expected.num_rows == ran["record"]["rows_out"]
    assert pq.read_table(out / "all.parquet").equals(expected)
    folder = cli_json(
        "export", ran["record"]["job_id"], "--to", str(out / "parts"), *ran["where"][:2]
    )
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert len(parts) == len(folder["files"]) == ran["record"]["batches"]
    assert pa.concat_tables(pq.read_table(p) for p in parts).equals(expected)
    jsonl = cli_json(
        "export", ran["record"]["job_id"], "--to", str(out / "all.jsonl"), *ran["where"][:2]
    )
    lines = (out / "all.jsonl").read_text().splitlines()
    assert len(lines) == jsonl["rows"] and json.loads(lines[0])["id"] == expected["id"][0].as_py()


def test_gc_lists_then_removes_only_unreferenced_and_stale(ran: dict):
    artifacts = ran["dir"] / "out" / "artifacts"
    junk = b"not referenced by any checkpoint"
    digest = hashlib.sha256(junk).hexdigest()
    orphan = artifacts / "sha256" / digest[:2] / f"{digest}.parquet"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(junk)
    stale = artifacts / "tmp" / f"{digest}.abc.partial"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    os.utime(stale, (old, old))
    fresh_digest = hashlib.sha256(b"fresh").hexdigest()
    fresh = artifacts / "sha256" / fresh_digest[:2] / f"{fresh_digest}.parquet"
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"fresh")  # as if a live run just published it

    listed = cli_json("gc", *ran["where"][:2])
    assert sorted(c["kind"] for c in listed["candidates"]) == ["temporary", "unreferenced"]
    assert listed["kept_young"] == 1
    assert orphan.exists() and stale.exists()
    applied = cli_json("gc", "--apply", *ran["where"][:2])
    assert len(applied["candidates"]) == 2
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    rerun = run_json(
        "run",
        "demo",
        "--profile",
        "local-cpu",
        "--set",
        "batch_rows=700",
        *ran["where"],
        *ran["inputs"],
    )
    assert rerun["skipped_fraction"] == 1.0


def test_retry_failed_reruns_only_the_failed_batches(tmp_path: Path, demo_inputs: list[str]):
    flag = tmp_path / "flaky"
    flag.write_text("on")
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    args = [
        "run",
        "tests/pipelines/paced.py",
        "--set",
        "batch_rows=300",
        "--set",
        f"pace.fail_flag={flag}",
        "--set",
        "max_attempts=2",
        "--set",
        "retry_backoff_s=0.05",
        *where,
        *[a for i in demo_inputs for a in ("--input", i)],
    ]
    first = run_json(*args, expect=1)
    assert first["status"] == "FAILED"
    poisoned = {p["key"] for p in first["poison_batches"]}
    assert len(poisoned) == 5  # ids 0, 1000, 2000, 3000, 4000
    assert {p["error_type"] for p in first["poison_batches"]} == {"RuntimeError"}
    status = cli_json("status", *where[:2])
    assert status["failed_batches"] == 5
    flag.unlink()
    retried = run_json("retry", "--failed", *where[:2])
    assert retried["status"] == "SUCCEEDED"
    assert retried["counts"]["pace"]["run"] == 5
    assert retried["counts"]["pace"]["skipped"] == 0
    assert retried["counts"]["upper"]["run"] == 5
    final = run_json(*args)
    assert final["skipped_fraction"] == 1.0


def test_force_release(tmp_path: Path):
    state = tmp_path / "state"
    (state / "locks").mkdir(parents=True)
    (state / "locks" / "demo.json").write_text(
        json.dumps(
            {
                "pipeline": "demo",
                "job_id": "demo-x",
                "host": "elsewhere",
                "pid": 1,
                "started_at": time.time(),
                "lease_expires": time.time() + 600,
                "token": "t",
            }
        )
    )
    out = run_cli("lock", "release", "demo", "--force", "--state", str(state))
    assert out.returncode == 0, out.stderr
    assert "released demo's lock" in out.stdout and "forced" in out.stdout
    assert not (state / "locks" / "demo.json").exists()
    assert run_json("lock", "status", "--state", str(state)) == {"locks": []}
