"""The data commands (`winnow status`, `inspect`, `export`, `gc`, `lock`) and `retry`,
against the state of real runs (the shared ``demo_job``) and a hand-written lock."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import PACED, run_args, run_cli, run_json
from winnow import api


def cli_json(*args: str, expect: int = 0) -> dict:
    proc = run_cli(*args, "--json")
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout)


def test_status_counts_match_the_job(demo_job: dict):
    data = cli_json("status", *demo_job["state"])
    record = demo_job["record"]
    assert data["queue"]["succeeded"] == 1
    assert data["jobs"][0]["job_id"] == record["job_id"]
    for stage, counts in record["counts"].items():
        assert data["stages"][stage]["succeeded"] == counts["run"]
        assert data["stages"][stage]["rows_out"] == counts["rows_out"]
    assert data["quarantined_records"] == record["bad_records"] > 0
    assert data["failed_batches"] == 0
    quarantine = cli_json("inspect", "quarantine", "--limit", "100", *demo_job["state"])
    assert len(quarantine["records"]) == record["bad_records"]
    for bad in quarantine["records"]:
        assert bad["file"].endswith((".jsonl", ".jsonl.gz")) and bad["row"] >= 1 and bad["error"]


def test_inspect_job_prints_the_run_log(demo_job: dict):
    job = demo_job["record"]["job_id"]
    proc = run_cli("inspect", "job", "--id", job, "--format", "markdown", *demo_job["state"])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for section in ("# Run log: " + job, "## State before / after / delta", "## Per stage"):
        assert section in text
    for stage in demo_job["record"]["counts"]:
        assert f"| {stage} |" in text
    missing = run_cli("inspect", "job", "--id", "nope-1", *demo_job["state"])
    assert missing.returncode == 2 and "winnow jobs" in missing.stderr


def test_inspect_job_takes_the_job_positionally_and_prints_tables(demo_job: dict):
    job = demo_job["record"]["job_id"]
    proc = run_cli("inspect", "job", job, *demo_job["state"])
    assert proc.returncode == 0, proc.stderr
    assert "# Run log" not in proc.stdout and "per stage" in proc.stdout  # tables, not Markdown
    stages = ["normalize", "quality", "embed"]  # the demo's order (not alphabetical)
    rows = [line.split("│")[1].strip() for line in proc.stdout.splitlines() if "│" in line]
    assert rows[: len(stages)] == stages
    assert run_cli("inspect", "job", job, "--id", job, *demo_job["state"]).returncode == 0
    for bad in ([], [job, "--id", "other-1"]):
        proc = run_cli("inspect", "job", *bad, *demo_job["state"])
        assert proc.returncode == 2 and "name the job once" in proc.stderr


def test_inspect_artifact_and_batch_walk_the_lineage(demo_job: dict):
    manifest = api.read_manifest(demo_job["record"]["manifest"])
    entry = manifest["batches"][1]
    info = cli_json("inspect", "artifact", entry["artifact"]["digest"][:12], *demo_job["state"])
    [use] = info["checkpoints"]
    assert [c["stage"] for c in use["chain"]] == ["normalize", "quality", "embed"]
    assert use["chain"][-1]["digest"] == entry["artifact"]["digest"]
    assert use["source"] == entry["source"]
    assert use["job_id"] == demo_job["record"]["job_id"]
    batch = cli_json("inspect", "batch", entry["batch"], *demo_job["state"])
    assert {r["stage"] for r in batch["stages"]} == {"normalize", "quality", "embed"}
    assert {e["type"] for e in batch["history"]} == {"checkpoint"}
    bad = run_cli("inspect", "artifact", "../../etc", *demo_job["state"])
    assert bad.returncode == 2 and "hex" in bad.stderr


def test_export_writes_the_output_in_source_order(demo_job: dict):
    out = demo_job["dir"] / "export"
    expected = api.output_table(demo_job["record"])
    result = cli_json(
        "export", demo_job["record"]["job_id"], "--to", str(out / "all.parquet"), *demo_job["state"]
    )
    assert result["rows"] == expected.num_rows == demo_job["record"]["rows_out"]
    assert pq.read_table(out / "all.parquet").equals(expected)
    folder = cli_json(
        "export", demo_job["record"]["job_id"], "--to", str(out / "parts"), *demo_job["state"]
    )
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert len(parts) == len(folder["files"]) == demo_job["record"]["batches"]
    assert pa.concat_tables(pq.read_table(p) for p in parts).equals(expected)
    jsonl = cli_json(
        "export", demo_job["record"]["job_id"], "--to", str(out / "all.jsonl"), *demo_job["state"]
    )
    lines = (out / "all.jsonl").read_text().splitlines()
    assert len(lines) == jsonl["rows"] and json.loads(lines[0])["id"] == expected["id"][0].as_py()


def test_gc_lists_then_removes_only_unreferenced_and_stale(demo_job: dict):
    artifacts = demo_job["dir"] / "out" / "artifacts"
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

    listed = cli_json("gc", *demo_job["state"])
    assert sorted(c["kind"] for c in listed["candidates"]) == ["temporary", "unreferenced"]
    assert listed["kept_young"] == 1
    assert orphan.exists() and stale.exists()
    applied = cli_json("gc", "--apply", *demo_job["state"])
    assert len(applied["candidates"]) == 2
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    fresh.unlink()  # the shared job's artifacts as they were
    rerun = run_json(
        "run", "demo", "--profile", "local-cpu", "--set", "batch_rows=700",
        *demo_job["where"], *demo_job["inputs"],
    )  # fmt: skip
    assert rerun["skipped_fraction"] == 1.0


def test_retry_failed_reruns_only_the_failed_batches(tmp_path: Path, demo_inputs: list[str]):
    flag = tmp_path / "flaky"
    flag.write_text("on")
    state = ["--state", str(tmp_path / "state")]
    sets = ["batch_rows=300", f"pace.fail_flag={flag}", "max_attempts=2", "retry_backoff_s=0.05"]
    args = run_args(PACED, tmp_path, demo_inputs, *sets)
    first = run_json(*args, expect=1)
    assert first["status"] == "FAILED"
    poisoned = {p["key"] for p in first["poison_batches"]}
    assert len(poisoned) == 5  # ids 0, 1000, 2000, 3000, 4000
    assert {p["error_type"] for p in first["poison_batches"]} == {"RuntimeError"}
    status = cli_json("status", *state)
    assert status["failed_batches"] == 5
    flag.unlink()
    retried = run_json("retry", "--failed", *state)
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
