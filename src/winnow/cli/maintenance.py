"""`winnow gateway` maintenance commands.

compact-events, archive, snapshot, restore-snapshot, migrate-state. Each
parses, calls the library, prints.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape

from winnow.cli import console
from winnow.cli.options import state_option
from winnow.gateway import migrate, snapshots
from winnow.profile import load_profile
from winnow.storage import journal
from winnow.storage.state import State, default_state_url

_out = console.out

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, sort_keys=True, default=str))


def _say(text: str) -> None:
    """One line that may hold long paths: never folded mid-path."""
    _out.print(text, soft_wrap=True, highlight=False)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


@click.command("compact-events")
@click.option(
    "--keep-recent-days",
    type=int,
    default=7,
    show_default=True,
    help="Days left as they are, today included; older days go into one archive.",
)
@state_option
@json_option
def compact_events(keep_recent_days: int, state: State, as_json: bool) -> None:
    """Concatenate old daily event journals into one gzip archive under events/archive/."""
    result = journal.compact_events(state, keep_recent_days)
    if as_json:
        _echo_json(result)
        return
    if not result["compacted"]:
        _say(
            f"nothing to compact: no journal day before {result['kept_from']} "
            f"(--keep-recent-days {keep_recent_days})"
        )
        return
    days = result["days"]
    _say(
        f"compacted {len(result['compacted'])} journal files ({days[0]} to {days[-1]}, "
        f"{result['events']:,} events):"
    )
    for path in result["compacted"]:
        _say(f"  {escape(path)}")
    _say(f"archive: {escape(result['archive'])}")
    for torn in result["torn"]:
        _say(f"[yellow]left out a torn last line[/yellow] {escape(torn)}")
    _say(f"kept as they are: days from {result['kept_from']}")


@click.command("archive")
@click.option(
    "--older-than",
    default="30d",
    show_default=True,
    help="Age by creation time: 30d, 12h, 90m, 2w (a bare number is days).",
)
@state_option
@json_option
def archive(older_than: str, state: State, as_json: bool) -> None:
    """Move finished job records older than --older-than to jobs-archive/<YYYY-MM>/."""
    result = journal.archive_jobs(state, journal.parse_duration(older_than))
    if as_json:
        _echo_json(result)
        return
    _say(
        f"archived {len(result['archived'])} finished job records created before "
        f"{result['cutoff']} (--older-than {older_than})" + (":" if result["archived"] else "")
    )
    for job in result["archived"]:
        _say(f"  {job['job_id']} {job['status']} -> {escape(job['path'])}")
    _say(f"kept {result['kept']} job records in jobs/ (pending, running or recent)")
    for path in result["skipped"]:
        _say(f"[yellow]skipped[/yellow] {escape(path)}: no readable created_at")


@click.command("snapshot")
@click.option(
    "--name", default=snapshots.DEFAULT_NAME, show_default=True, help="File name under snapshots/."
)
@state_option
@json_option
def snapshot(name: str, state: State, as_json: bool) -> None:
    """Rebuild a state snapshot from jobs, checkpoints and events; write it to snapshots/NAME."""
    path = snapshots.write_snapshot(state, name)
    data = snapshots.read_snapshot(state, name)
    if as_json:
        _echo_json({"path": path, **{k: v for k, v in data.items() if k != "jobs"}})
        return
    q = data["queue_depth"]
    _say(f"snapshot: {escape(path)} (created {data['created_at']})")
    _say(
        f"queue depth: pending {q['pending']}, running {q['running']}, done {q['done']}, "
        f"failed {q['failed']} (backlog {data['backlog']})"
    )
    _say(f"job status counts: {_counts(data['job_status_counts'])}")
    _say("checkpoints by stage/status:" + ("" if data["checkpoints"] else " none"))
    for stage, counts in data["checkpoints"].items():
        _say(f"  {stage}: {_counts(counts)}")
    events = data["events"]
    _say(f"events: {events['total']:,} total; by type: {_counts(events['by_type'])}")
    for torn in data["journal_torn"]:
        _say(f"[yellow]torn journal line (left out)[/yellow] {escape(torn)}")


@click.command("restore-snapshot")
@click.option("--latest", is_flag=True, help="The most recently created snapshot.")
@click.option("--name", default=None, help="A snapshot file name under snapshots/.")
@state_option
@json_option
def restore_snapshot(latest: bool, name: str | None, state: State, as_json: bool) -> None:
    """Restore the job queue from a snapshot; re-check every checkpoint against its artifact."""
    result = snapshots.restore_snapshot(state, name=name, latest=latest)
    if as_json:
        _echo_json(result)
        return
    _say(
        f"snapshot {result['snapshot']} (created {result['snapshot_created_at']}): "
        f"restored {len(result['restored'])} job records, {result['unchanged']} unchanged, "
        f"{len(result['kept_newer'])} newer on disk kept"
    )
    for job in result["restored"]:
        was = job["was"] or "missing"
        moved = (
            f" (was {job['snapshot_status']} in the snapshot)"
            if job["status"] != job["snapshot_status"]
            else ""
        )
        _say(f"  {job['job_id']}: {was} -> {job['status']}{moved}")
    cps = result["checkpoints"]
    for p in cps["mismatches"]:
        _say(f"[red]MISMATCH[/red] {p['stage']} {p['key'][:16]}…: {escape(p['problem'])}")
    _say(
        f"checkpoints: verified {cps['verified']} succeeded artifacts (size), "
        f"{cps['marked_failed']} marked FAILED"
        + (" — the next run recomputes them" if cps["marked_failed"] else "")
    )


@click.command("migrate-state")
@click.option(
    "--source-root",
    default=None,
    help="State root to copy from (default $WINNOW_STATE or .winnow/state/v1); only read.",
)
@click.option("--target-root", required=True, help="New, empty state root to copy to.")
@click.option("--force", is_flag=True, help="Clear a non-empty target root first.")
@click.option(
    "--profile",
    "-p",
    default=None,
    help="Profile whose storage_options reach both roots (endpoint, credentials).",
)
@json_option
def migrate_state(
    source_root: str | None, target_root: str, force: bool, profile: str | None, as_json: bool
) -> None:
    """Copy a state root to a new one marked state/v2 (never changed in place)."""
    options = load_profile(profile).storage_options if profile else None
    result = migrate.migrate_state(
        source_root or default_state_url(), target_root, force=force, storage_options=options
    )
    if as_json:
        _echo_json(result)
        return
    _say(
        f"copied {escape(result['source'])} ({result['from_version']}) -> "
        f"{escape(result['target'])}: {_counts(result['copied'])} files, "
        f"{result['bytes']:,} bytes"
    )
    if result["skipped"]:
        _say(
            f"not copied: {_counts(result['skipped'])} (a lock belongs to a live run; "
            "a temporary is an unfinished write)"
        )
    _say(f"wrote {escape(result['version_file'])} ({result['to_version']})")
    _say(f"wrote {escape(result['migration_file'])}")
    _say(f"use it with --state {escape(result['target'])}")


def register(group: click.Group) -> None:
    """Add the maintenance commands to the ``winnow gateway`` group."""
    for command in (compact_events, archive, snapshot, restore_snapshot, migrate_state):
        group.add_command(command)
