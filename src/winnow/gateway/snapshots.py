"""State snapshots: the queue, job and checkpoint counts and event totals, in one JSON file.

A snapshot is rebuilt from what the state holds (``jobs/``, ``stages/``, the
hot journal ``events/``; archived events are not counted) and written to
``<state>/snapshots/<name>``. It carries each job's queue fields, so a restore
can rebuild the queue after ``jobs/`` is lost. Queue depth is the gateway's:
``done`` is SUCCEEDED, ``failed`` is FAILED plus CANCELLED (see ``queue.depth``).
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from winnow.errors import UsageError
from winnow.gateway import queue
from winnow.records import ErrorRecord, JobStatus
from winnow.storage.journal import event_totals
from winnow.storage.state import State, now_iso
from winnow.tools.status import job_summary
from winnow.tools.verify import verify_state

DEFAULT_NAME = "state-latest.json"
SNAPSHOTS = "snapshots"  # the folder in the state


def build_snapshot(state: State) -> dict[str, Any]:
    """Count what the state holds now.

    Each entry of ``jobs`` has job_id, status, pipeline, created_at and a
    ``record``: the whole job record for PENDING and RUNNING jobs (its
    ``request`` is what the gateway reruns), the summary (``tools.status.job_summary``)
    for finished ones, which only an audit needs.
    """
    jobs = state.list_jobs()
    store = state.checkpoints()
    checkpoints = {
        stage: dict(
            sorted(Counter(r["status"] for r in store.load(stage).records.values()).items())
        )
        for stage in store.stages()
    }
    journal = state.read_events()
    depth = queue.depth(jobs)
    return {
        "created_at": now_iso(),
        "state_url": state.display(),
        "version": state.version(),
        "queue_depth": depth,
        "backlog": depth["pending"] + depth["running"],
        "job_status_counts": dict(sorted(Counter(str(j.get("status")) for j in jobs).items())),
        "checkpoints": checkpoints,
        "events": event_totals(journal.events),
        "journal_torn": journal.torn,
        "jobs": [_job_entry(j) for j in jobs],
    }


def _job_entry(record: dict[str, Any]) -> dict[str, Any]:
    live = record.get("status") in (JobStatus.PENDING, JobStatus.RUNNING)
    summary = job_summary(record)
    summary.pop("note", None)
    return {
        "job_id": record["job_id"],
        "status": record.get("status"),
        "pipeline": record.get("pipeline"),
        "created_at": record.get("created_at"),
        "record": record if live else summary,
    }


def write_snapshot(state: State, name: str = DEFAULT_NAME) -> str:
    """Build a snapshot and write it to ``<state>/snapshots/<name>``; return its URL."""
    file = _snapshot_file(name)
    data = build_snapshot(state)
    return state.write_file(file, json.dumps(data, indent=2, sort_keys=True, default=str).encode())


def _snapshot_file(name: str) -> str:
    if not name.endswith(".json") or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} is not a snapshot name: give a file name ending in .json")
    return f"{SNAPSHOTS}/{name}"


def list_snapshots(state: State) -> dict[str, dict[str, Any]]:
    """Every readable snapshot by name."""
    files = [f for f in state.files(SNAPSHOTS) if f.endswith(".json")]
    out = {}
    for path, data in state.read_files(files).items():
        try:
            snap = json.loads(data)
        except ValueError:
            continue  # a damaged snapshot is no candidate
        if isinstance(snap, dict) and "created_at" in snap:
            out[posixpath.basename(path)] = snap
    return out


def latest_snapshot(state: State) -> tuple[str, dict[str, Any]] | None:
    """The most recently created snapshot, by its ``created_at``."""
    snaps = list_snapshots(state)
    if not snaps:
        return None
    name = max(snaps, key=lambda n: (snaps[n]["created_at"], n))
    return name, snaps[name]


def read_snapshot(state: State, name: str) -> dict[str, Any]:
    """The snapshot ``name`` as written.

    Raises:
        UsageError: there is no such snapshot, or it does not parse.
    """
    file = _snapshot_file(name)
    try:
        data = json.loads(state.read_file(file))
    except FileNotFoundError:
        raise UsageError(
            f"no snapshot {name!r} in {state.display()}/snapshots; "
            "`winnow gateway snapshot` writes one, `--latest` picks the newest"
        ) from None
    except ValueError:
        raise UsageError(f"snapshot {state.file_url(file)} is not JSON; pick another") from None
    return dict(data)


def restore_snapshot(state: State, name: str | None = None, latest: bool = False) -> dict[str, Any]:
    """Rebuild the job queue from a snapshot, then re-check every checkpoint.

    A job record missing from ``jobs/``, or holding another status and written
    before the snapshot, is rewritten as the snapshot has it, except that work
    in flight cannot be resumed from a snapshot: a RUNNING queued job comes back
    PENDING (the gateway reruns it; committed batches are skipped), a RUNNING
    foreground run (no ``request``) comes back FAILED with the fix. Records
    written after the snapshot are newer and kept.

    Checkpoints are never taken from the snapshot or trusted: every SUCCEEDED
    one is size-checked against its artifact and a mismatch is marked FAILED,
    so the next run recomputes it.

    Raises:
        UsageError: not exactly one of ``name`` and ``latest``, or no such snapshot.
    """
    name, snap = _chosen(state, name, latest)
    taken = _parse(snap["created_at"])
    restored: list[dict[str, Any]] = []
    kept_newer: list[str] = []
    unchanged = 0
    for entry in snap.get("jobs", []):
        job_id = entry["job_id"]
        current = state.job_as_written(job_id)
        if current is not None:
            record, written = current
            if record.get("status") == entry["status"]:
                unchanged += 1
                continue
            if written is None or taken is None or written > taken:
                kept_newer.append(job_id)
                continue
        new = _restored_record(entry, name)
        state.write_job(new)
        was = None if current is None else current[0].get("status")
        restored.append(
            {
                "job_id": job_id,
                "snapshot_status": entry["status"],
                "status": new["status"],
                "was": was,
            }
        )
    verified = verify_state(state, full=False)
    return {
        "snapshot": name,
        "snapshot_created_at": snap["created_at"],
        "restored": restored,
        "unchanged": unchanged,
        "kept_newer": kept_newer,
        "checkpoints": {
            "verified": verified["checked"],
            "marked_failed": len(verified["mismatches"]),
            "mismatches": verified["mismatches"],
        },
    }


def _chosen(state: State, name: str | None, latest: bool) -> tuple[str, dict[str, Any]]:
    """The snapshot named, or the latest one: its name and contents."""
    if (name is None) == (not latest):
        raise UsageError("give one of --latest or --name NAME")
    if name is not None:
        return name, read_snapshot(state, name)
    found = latest_snapshot(state)
    if found is None:
        raise UsageError(
            f"no snapshot in {state.display()}/snapshots; `winnow gateway snapshot` writes one"
        )
    return found


def _restored_record(entry: dict[str, Any], name: str) -> dict[str, Any]:
    record = dict(entry.get("record") or {})
    for key in ("job_id", "status", "pipeline", "created_at"):
        record[key] = entry.get(key)
    record["restored"] = {"snapshot": name, "at": now_iso(), "status": entry["status"]}
    if entry["status"] == JobStatus.RUNNING:
        if "request" in record:
            record["status"] = JobStatus.PENDING
            record["requeued"] = {"at": now_iso(), "reason": f"restored from snapshot {name}"}
        else:
            record["status"] = JobStatus.FAILED
            record["error"] = ErrorRecord(
                "Interrupted",
                f"was running when snapshot {name} was taken; rerun the same "
                "command to finish it (committed batches are skipped)",
            ).to_dict()
    return record


def _parse(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
