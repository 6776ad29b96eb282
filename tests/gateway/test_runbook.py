"""Every command block of Winnow's operations runbook, run verbatim in a scratch copy.

The commands are read from ``../shared/seeds/winnow-operations-runbook.md``
(or the copy in ``tests/gateway/runbook.md`` when the seed is not beside the
repository), run with ``uv run`` from the scratch copy's root, and checked
against what the runbook says each prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

SEED = ROOT.parent / "shared" / "seeds" / "winnow-operations-runbook.md"
COPY = Path(__file__).with_name("runbook.md")


def runbook_blocks() -> list[str]:
    text = (SEED if SEED.exists() else COPY).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks]


def test_the_copy_of_the_runbook_is_current():
    if SEED.exists():
        assert COPY.read_text() == SEED.read_text(), "refresh tests/gateway/runbook.md"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's tracked files, with its own uv environment."""
    dest = tmp_path_factory.mktemp("runbook") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    # Set up as README's quick start does: bytecode compiled once, at sync.
    synced = sh(dest, "uv sync --compile-bytecode")
    assert synced.returncode == 0, synced.stderr[-2000:]
    return dest


def sh(cwd: Path, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "WINNOW_STATE")}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def wait_health(port: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                return dict(json.loads(r.read()))
        except OSError:
            time.sleep(0.3)
    raise AssertionError("no /health")


@pytest.mark.slow
def test_every_runbook_command_works_verbatim(scratch: Path, demo_inputs: list[str]):
    blocks = runbook_blocks()
    expected = [
        "uv run winnow gateway start --foreground",
        "uv run winnow gateway start",
        "uv run winnow gateway stop",
        "uv run winnow gateway status",
        "uv run winnow inspect job --id <job_id>",
        "uv run winnow gateway compact-events --keep-recent-days 1",
        "uv run winnow gateway snapshot --name state-latest.json",
    ]
    assert blocks[: len(expected)] == expected
    assert blocks[len(expected)].startswith("uv run winnow gateway migrate-state")
    start_fg, start_bg, stop, status, inspect, compact, snapshot, migrate = blocks[:8]

    # After the quick start's sync, `uv run` neither installs nor recompiles anything.
    quiet = sh(scratch, "uv run winnow --version")
    assert quiet.returncode == 0, quiet.stderr
    assert "Bytecode compiled" not in quiet.stderr and "Installed" not in quiet.stderr

    # §1, foreground: it serves until SIGTERM, then exits 0.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "WINNOW_STATE")}
    fg = subprocess.Popen(
        ["bash", "-c", f"exec {start_fg}"],
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert wait_health(8899, timeout=300)["status"] == "ok"
    fg.send_signal(signal.SIGTERM)
    out, _ = fg.communicate(timeout=120)
    assert fg.returncode == 0, out
    assert "gateway started" in out and "gateway stopped" in out

    # A day-old journal and a queued job, so every later section has something to show.
    events = scratch / ".winnow" / "state" / "v1" / "events"
    old_day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 3 * 86400))
    events.mkdir(parents=True, exist_ok=True)
    (events / f"{old_day}.jsonl").write_text(
        json.dumps({"ts": f"{old_day}T00:00:00", "type": "job_started", "job_id": "old"}) + "\n"
    )
    queued = sh(
        scratch,
        f"uv run winnow enqueue tests/pipelines/paced.py --input {demo_inputs[0]} --json",
    )
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["job_id"]

    # §1, background start, status, stop; §2 the job it ran, inspected.
    started = sh(scratch, start_bg)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "gateway started" in started.stdout
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        shown = sh(scratch, status)
        if "done 1" in shown.stdout:
            break
        time.sleep(1)
    assert shown.returncode == 0, shown.stderr
    for phrase in (
        "queue depth: pending 0, running 0, done 1, failed 0",
        "backlog: 0 (pending + running)",
        "worker health: scheduler running, active_jobs 0",
        "runtime metrics: jobs {'SUCCEEDED': 1}",
        "latest snapshot: ",
    ):
        assert phrase in shown.stdout, shown.stdout
    stopped = sh(scratch, stop)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    after = sh(scratch, status)
    assert "scheduler stopped" in after.stdout

    log = sh(scratch, inspect.replace("<job_id>", job_id))
    assert log.returncode == 0, log.stderr
    for phrase in (job_id, "per stage", "checkpoints by status", "SUCCEEDED"):
        assert phrase in log.stdout

    # §3: compaction names the compacted source files and the archive file.
    compacted = sh(scratch, compact)
    assert compacted.returncode == 0, compacted.stderr
    assert f"{old_day}.jsonl" in compacted.stdout and "archive" in compacted.stdout
    assert not (events / f"{old_day}.jsonl").exists()
    assert list((events / "archive").glob("*.jsonl.gz"))

    # §4: the snapshot holds queue depth, job status counts, checkpoint counts, event totals.
    snap = sh(scratch, snapshot)
    assert snap.returncode == 0, snap.stderr
    body = json.loads((scratch / ".winnow/state/v1/snapshots/state-latest.json").read_text())
    assert body["queue_depth"]["done"] == 1
    assert body["job_status_counts"] == {"SUCCEEDED": 1}
    assert body["checkpoints"]["pace"]["SUCCEEDED"] > 0
    assert body["events"]["total"] > 0 and body["events"]["by_type"]["job_finished"] >= 1
    for phrase in ("queue depth", "job status", "checkpoint", "event"):
        assert phrase in snap.stdout.lower()

    # §5: an explicit copy to v2 with VERSION and migration.json; --force to overwrite.
    migrated = sh(scratch, migrate)
    assert migrated.returncode == 0, migrated.stderr
    v2 = scratch / ".winnow" / "state" / "v2"
    assert (v2 / "VERSION").read_text().strip() == "state/v2"
    summary = json.loads((v2 / "migration.json").read_text())
    assert summary["copied"]["jobs"] == 1 and summary["to_version"] == "state/v2"
    again = sh(scratch, migrate)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = sh(scratch, migrate + " --force")
    assert forced.returncode == 0, forced.stderr
    reads_v2 = sh(scratch, "uv run winnow jobs --state .winnow/state/v2 --json")
    assert reads_v2.returncode == 0 and job_id in reads_v2.stdout
