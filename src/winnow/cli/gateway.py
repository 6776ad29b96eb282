"""``winnow enqueue`` and ``winnow gateway ...``: the operations side of the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from winnow import api
from winnow.cli import console
from winnow.cli import maintenance as maintenance_cli
from winnow.cli.options import json_option, request_options
from winnow.errors import UsageError
from winnow.gateway import daemon, queue, service, snapshots
from winnow.records import JobStatus
from winnow.request import RunRequest
from winnow.storage import journal
from winnow.storage.liveness import Liveness, liveness

_out = console.out

run_dir_option = click.option(
    "--run-dir",
    default=daemon.DEFAULT_RUN_DIR,
    show_default=True,
    help="Local folder for the gateway's PID file and log.",
)
state_option = click.option(
    "--state", default=None, help="State root URL (default $WINNOW_STATE or .winnow/state/v1)."
)


@click.command()
@request_options()
def enqueue(request: RunRequest, as_json: bool) -> None:
    """Queue a run of PIPELINE for the gateway (validated now; bad input exits 2)."""
    record = queue.enqueue(request)
    if as_json:
        click.echo(json.dumps({"job_id": record["job_id"], "status": record["status"]}))
    else:
        _out.print(f"queued {record['job_id']} ({record['pipeline']}): PENDING")


@click.group()
def gateway() -> None:
    """The operations daemon: job queue, scheduler, journal, snapshots, migrations."""


@gateway.command()
@click.option("--foreground", is_flag=True, help="Stay attached to the terminal (logs to stderr).")
@click.option("--recover", is_flag=True, help="Repair a torn/corrupt event journal first.")
@state_option
@run_dir_option
@click.option("--port", default=daemon.DEFAULT_PORT, show_default=True, help="/health, /metrics.")
@click.option("--address", default=None, help="Ray cluster to run jobs on (default: local).")
@click.option("--snapshot-every", default=300.0, show_default=True, help="Seconds.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between queue checks.")
def start(
    foreground: bool,
    recover: bool,
    state: str | None,
    run_dir: str,
    port: int,
    address: str | None,
    snapshot_every: float,
    poll: float,
) -> None:
    """Start the scheduler (in the background unless --foreground)."""
    settings = daemon.Settings(
        state=state,
        run_dir=run_dir,
        port=port,
        address=address,
        poll_s=poll,
        snapshot_every_s=snapshot_every,
        recover=recover,
    )
    if foreground:
        service.configure_logging()
        sys.exit(daemon.Gateway(settings).serve())
    holder = service.PidFile(run_dir).holder()
    if holder is not None:
        raise UsageError(
            f"a gateway is already running (pid {holder}, pid file {run_dir}/gateway.pid); "
            "stop it with `winnow gateway stop`"
        )
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    log_path = Path(run_dir) / "gateway.log"
    argv = [sys.executable, "-m", "winnow.cli", "gateway", "start", "--foreground"]
    argv += ["--run-dir", run_dir, "--port", str(port), "--snapshot-every", str(snapshot_every)]
    argv += ["--poll", str(poll)]
    argv += ["--state", state] if state else []
    argv += ["--address", address] if address else []
    argv += ["--recover"] if recover else []
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise UsageError("the gateway exited at start:\n" + "\n".join(tail))
        health = _health(port)
        if health is not None and health.get("pid") == proc.pid:
            break
        time.sleep(0.2)
    else:
        raise UsageError(f"the gateway (pid {proc.pid}) did not answer /health; see {log_path}")
    _out.print(
        f"gateway started: pid {proc.pid}, log {log_path}, "
        f"http://127.0.0.1:{port}/health and /metrics"
    )


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return None


@gateway.command()
@run_dir_option
@click.option("--force", is_flag=True, help="SIGKILL at once (when a graceful stop hangs).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for exit.")
def stop(run_dir: str, force: bool, timeout: float) -> None:
    """Stop the gateway: no new jobs, in-flight batches commit, locks released, exit 0."""
    pidfile = service.PidFile(run_dir)
    pid = pidfile.holder()
    if pid is None:
        _out.print("no gateway is running")
        return
    os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            pidfile.holder() != pid
            and liveness(pid, socket.gethostname(), zombie_is_gone=True) is Liveness.GONE
        ):
            break
        time.sleep(0.2)
    else:
        raise UsageError(
            f"the gateway (pid {pid}) did not stop within {timeout:.0f}s; "
            "`winnow gateway stop --force` kills it (its job is requeued on the next start)"
        )
    if force:
        pidfile.path.unlink(missing_ok=True)
    _out.print(f"gateway (pid {pid}) {'killed' if force else 'stopped'}")


@gateway.command()
@state_option
@run_dir_option
@click.option("--verbose", "-v", is_flag=True, help="Add memory, journal size and active work.")
@json_option
def status(state: str | None, run_dir: str, verbose: bool, as_json: bool) -> None:
    """Queue depth, backlog, worker health, persisted runtime metrics, latest snapshot."""
    data = gateway_status(state, run_dir, verbose)
    if as_json:
        click.echo(json.dumps(data, sort_keys=True, default=str))
        return
    q = data["queue"]
    health = data["health"]
    lines = [
        f"queue depth: pending {q['pending']}, running {q['running']}, done {q['done']}, "
        f"failed {q['failed']}",
        f"backlog: {data['backlog']} (pending + running)",
        f"worker health: scheduler {health['scheduler']}, active_jobs {health['active_jobs']}"
        + (f", pid {health['pid']}" if health.get("pid") else ""),
        f"runtime metrics: jobs {data['metrics']['jobs'] or '{}'}; "
        f"stages {data['metrics']['stages'] or '{}'}",
        f"latest snapshot: {data['latest_snapshot'] or 'none'}",
    ]
    if verbose:
        v = data["verbose"]
        lines += [
            f"memory: {v['memory_rss_mb']} MiB RSS" if v["memory_rss_mb"] else "memory: n/a",
            f"journal size: {v['journal_bytes']:,} bytes in {v['journal_files']} files",
            f"active work: {v['active_work'] or 'none'}",
        ]
    for line in lines:
        click.echo(line)


def gateway_status(state: str | None, run_dir: str, verbose: bool = False) -> dict[str, Any]:
    """The gateway's state as ``winnow gateway status`` prints it.

    Args:
        state: the state URL (None: the default state).
        run_dir: where the daemon's pid file is, to tell a running scheduler
            from a stopped one.
        verbose: also report the daemon's memory, the journal's size and the
            jobs running now.

    Returns:
        The queue depth and backlog, the scheduler's health (from its pid file
        and its last runtime record), its metrics and the latest snapshot.
    """
    st = api.open_state(state)
    st.check_version()
    jobs = st.list_jobs()
    depth = queue.depth(jobs)
    runtime = daemon.read_runtime(st) or {}
    pid = service.PidFile(run_dir).holder()
    scheduler = "running" if pid is not None else "stopped"
    if pid is None and runtime.get("scheduler") == "running":
        scheduler = "stopped (unclean exit: run `winnow gateway start` to resume)"
    snapshot = _latest_snapshot(st)
    data: dict[str, Any] = {
        "state_url": st.display(),
        "queue": depth,
        "backlog": depth["pending"] + depth["running"],
        "health": {
            "scheduler": scheduler,
            "active_jobs": runtime.get("active_jobs", 0) if pid else 0,
            "pid": pid,
            "heartbeat_at": runtime.get("updated_at"),
        },
        "metrics": {"jobs": runtime.get("jobs", {}), "stages": runtime.get("stages", {})},
        "latest_snapshot": snapshot,
    }
    if verbose:
        files, size = journal.journal_size(st)
        data["verbose"] = {
            "memory_rss_mb": _rss_mb(pid) if pid else None,
            "journal_files": files,
            "journal_bytes": size,
            "active_work": [
                {"job_id": j["job_id"], "pipeline": j.get("pipeline"), "since": j.get("claimed_at")}
                for j in jobs
                if j.get("status") == JobStatus.RUNNING
            ],
        }
    return data


def _latest_snapshot(state: Any) -> str | None:
    found = snapshots.latest_snapshot(state)
    if not found:
        return None
    name, body = found
    return f"{body.get('created_at')} ({name})"


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


maintenance_cli.register(gateway)
