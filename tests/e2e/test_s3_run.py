"""The demo with its state and output on S3 (moto's server on loopback, through s3fs)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import fsspec

from tests.conftest import ROOT, one_json, run_cli
from winnow.profile import packaged_profiles

PROFILE = packaged_profiles() / "local-cpu.toml"


def test_demo_on_s3_reruns_from_elsewhere_and_no_secret_is_written(
    tmp_path: Path, demo_inputs: list[str], s3_server: str, s3_bucket: str
):
    planted_key = f"PLANTEDKEY{uuid.uuid4().hex[:12].upper()}"
    planted_secret = f"planted-secret-{uuid.uuid4().hex}"
    env_secret = f"env-secret-{uuid.uuid4().hex}"
    profile = tmp_path / "s3.toml"
    profile.write_text(
        PROFILE.read_text()
        + "\n[storage_options]\n"
        + f'key = "{planted_key}"\nsecret = "{planted_secret}"\n'
        + f'[storage_options.client_kwargs]\nendpoint_url = "{s3_server}"\n'
    )
    env = {"AWS_SECRET_ACCESS_KEY": env_secret, "AWS_ACCESS_KEY_ID": "env-key"}
    state = f"s3://{s3_bucket}/winnow/state/v1"
    args = [
        "run",
        str(ROOT / "pipelines" / "demo.py"),
        "--profile",
        str(profile),
        "--set",
        "batch_rows=800",
        "--state",
        state,
        "--output",
        f"s3://{s3_bucket}/out",
        *[a for i in demo_inputs for a in ("--input", i)],
        "--json",
    ]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    record = one_json(first.stdout)
    assert record["status"] == "SUCCEEDED" and record["manifest"].startswith("s3://")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = run_cli(*args, env=env, cwd=elsewhere)
    assert second.returncode == 0, second.stderr
    rerun = one_json(second.stdout)
    assert rerun["skipped_fraction"] == 1.0
    assert rerun["rows_out"] == record["rows_out"]

    tools_env = {**env, "AWS_ENDPOINT_URL": s3_server}
    status = run_cli("status", "--json", "--state", state, env=tools_env, cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queue"]["succeeded"] == 2
    verify = run_cli("verify", "--full", "--state", state, "--profile", str(profile), cwd=elsewhere)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    exported = run_cli(
        "export",
        record["job_id"],
        "--to",
        str(tmp_path / "export.parquet"),
        "--state",
        state,
        env=tools_env,
    )
    assert exported.returncode == 0, exported.stderr

    fs = fsspec.filesystem(
        "s3",
        key="k",
        secret="s",
        client_kwargs={"endpoint_url": s3_server},
        skip_instance_cache=True,
    )
    orphan_digest = hashlib.sha256(b"orphan").hexdigest()
    orphan = f"{s3_bucket}/out/artifacts/sha256/{orphan_digest[:2]}/{orphan_digest}.parquet"
    fs.pipe_file(orphan, b"orphan")
    before = len(fs.find(f"{s3_bucket}/out/artifacts"))
    gc = run_cli(
        "gc", "--apply", "--grace", "0", "--json", "--state", state, "--profile", str(profile)
    )
    assert gc.returncode == 0, gc.stderr
    assert [c["path"] for c in json.loads(gc.stdout)["candidates"]] == [orphan]
    fs.invalidate_cache()
    assert not fs.exists(orphan)
    assert len(fs.find(f"{s3_bucket}/out/artifacts")) == before - 1
    again = run_cli(*args, env=env, cwd=elsewhere)
    assert one_json(again.stdout)["skipped_fraction"] == 1.0

    # Every object the runs wrote, every local file, and what they printed.
    written = {p: fs.cat_file(p) for p in fs.find(s3_bucket)}
    assert any("/jobs/" in p for p in written) and any("/events/" in p for p in written)
    local = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != profile}
    printed = {
        "stdout/stderr": "".join(
            p.stdout + p.stderr for p in (first, second, status, verify, exported, gc, again)
        ).encode()
    }
    for secret in (planted_secret, planted_key, env_secret):
        leaks = [
            name
            for name, data in {**written, **local, **printed}.items()
            if secret.encode() in data
        ]
        assert not leaks, f"{secret[:12]}… leaked into {leaks}"
