"""The state root: version marker, job records, event journal, source index.

Layout (any fsspec URL, default ``.winnow/state/v1``)::

    VERSION                      state/v1
    stages/<stage>/segments/     checkpoint segments (see checkpoints.py)
    stages/<stage>/index/        each segment's columnar index (checkpoint_index.py)
    jobs/<job_id>.json           job records (audit trail)
    events/YYYY-MM-DD.jsonl      append-only event journal
    sources/<identity>.json      cached row counts (Parquet: row-group size) of input files
    inputs/<pipeline>.json       what a pipeline's last run read (explains the next plan)

Nothing outside ``storage/`` touches the filesystem: the gateway's own files
(``snapshots/``, ``gateway/``) and a migration's copy go through ``State.files`` & co.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from winnow.errors import StateError
from winnow.storage.checkpoints import CheckpointStore, Damage
from winnow.storage.fs import (
    ensure_writable,
    is_local,
    join,
    refresh,
    resolve,
    to_url,
    write_atomic,
)
from winnow.storage.job_records import JobRecords, _job_record
from winnow.storage.locks import LockStore

STATE_VERSION = "state/v1"  # what a fresh state is marked with
# Versions this Winnow reads. state/v2 (written by `gateway migrate-state`) has
# v1's layout; the bump marks a state that was copied, never changed in place.
KNOWN_VERSIONS = ("state/v1", "state/v2")
DEFAULT_STATE = ".winnow/state/v1"
VERSION_FILE = "VERSION"


def default_state_url() -> str:
    """The state URL to use: ``$WINNOW_STATE``, else ``.winnow/state/v1``."""
    return os.environ.get("WINNOW_STATE") or DEFAULT_STATE


class State(JobRecords):
    """One state root on any fsspec filesystem."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        self.fs, self.root = resolve(url, self.storage_options)
        self._event_seq = 0

    # -- version -----------------------------------------------------------
    def version(self) -> str | None:
        """The version marker's content, or None when the state has none (a fresh one)."""
        try:
            return str(self.fs.cat_file(join(self.root, VERSION_FILE)).decode().strip())
        except FileNotFoundError:
            return None

    def check_version(self) -> None:
        """Check that this Winnow can read the state.

        Raises:
            StateError: the state has a version this Winnow does not know (the
                message says how to migrate it).
        """
        found = self.version()
        if found is not None and found not in KNOWN_VERSIONS:
            raise StateError(
                f"state {self.url!r} is version {found!r}; this Winnow reads "
                f"{', '.join(KNOWN_VERSIONS)}. "
                "Copy it with `winnow gateway migrate-state --source-root OLD --target-root NEW` "
                "and pass --state NEW."
            )

    def prepare(self) -> None:
        """Check the version, make the root writable and mark its version."""
        self.check_version()
        ensure_writable(self.fs, self.root, "state root")
        if self.version() is None:
            self.mark_version(STATE_VERSION)

    def mark_version(self, version: str) -> str:
        """Write the version marker; return its URL."""
        return self.write_file(VERSION_FILE, f"{version}\n".encode())

    # -- checkpoints -------------------------------------------------------
    def checkpoints(self, job_id: str = "", flush_every: int = 256) -> CheckpointStore:
        """The checkpoint store of this state, writing as ``job_id``.

        A stage's buffered records are written as a segment once there are
        ``flush_every`` of them (and on ``flush``).
        """
        return CheckpointStore(self.fs, self.root, job_id, flush_every)

    def locks(self) -> LockStore:
        """The pipeline locks of this state."""
        return LockStore(self.fs, self.root)

    # -- repair ------------------------------------------------------------
    def repair(self, damage: Iterable[Damage]) -> list[dict[str, Any]]:
        """Mend each damaged file, after copying it to ``backups/repair-<UTC time>/``.

        A checkpoint segment is rewritten without its bad lines; a job record
        that is not one is moved to the backup. Each file is read again first,
        so a file that was replaced since it was found damaged is left alone.

        Returns:
            One entry per file mended: ``file``, ``backup`` (URLs), ``action``
            and ``dropped_lines``.
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        backups = join(self.root, "backups", f"repair-{stamp}")
        checkpoints = self.checkpoints()
        done = []
        for path in sorted({d.path for d in damage}):
            relative = path[len(self.root) :].lstrip("/") if path.startswith(self.root) else path
            backup = join(backups, relative)
            if relative.startswith("jobs/"):
                dropped = self._set_aside_job(path, backup)
                action = "not a job record: moved to the backup"
            else:
                dropped = checkpoints.repair(path, backup)
                action = f"rewritten without its {dropped} bad line(s)"
            if dropped:
                done.append(
                    {
                        "file": to_url(self.fs, path),
                        "backup": to_url(self.fs, backup),
                        "action": action,
                        "dropped_lines": dropped,
                    }
                )
        return done

    def _set_aside_job(self, path: str, backup: str) -> int:
        """Move a damaged job record file to ``backup``; 1 if it was, 0 if it is fine now."""
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return 0
        if _job_record(data)[0] is not None:
            return 0
        write_atomic(self.fs, backup, data)
        self.fs.rm_file(path)
        return 1

    # -- events ------------------------------------------------------------
    def append_events(self, events: list[dict[str, Any]]) -> None:
        """Append events to today's journal, one JSON object per line.

        On a local disk the journal is ``events/YYYY-MM-DD.jsonl``, appended in
        place; a torn last line left by a crash is terminated first, so a new
        record is never glued onto it. Object stores cannot append, and several
        machines may write at once, so there each flush is its own immutable
        part ``events/YYYY-MM-DD/<ms>-<host>-<pid>-<seq>.jsonl``; readers merge
        both forms.
        """
        if not events:
            return
        now = datetime.now(UTC)
        payload = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in events)
        if is_local(self.fs):
            path = join(self.root, "events", f"{now:%Y-%m-%d}.jsonl")
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            with open(path, "a+b") as fh:
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        # Seal the torn line, and say so on the next line, so a reader
                        # can tell a sealed torn append from corruption.
                        seal = event("journal_torn_tail_sealed", "", file=path)
                        payload = "\n" + json.dumps(seal, separators=(",", ":")) + "\n" + payload
                fh.write(payload.encode())
                fh.flush()
                os.fsync(fh.fileno())
            return
        self._event_seq += 1
        name = f"{int(time.time() * 1000):013d}-{socket.gethostname()}-{os.getpid()}-{self._event_seq:06d}"
        write_atomic(
            self.fs, join(self.root, "events", f"{now:%Y-%m-%d}", f"{name}.jsonl"), payload.encode()
        )

    def event_files(self) -> list[str]:
        """Journal files and parts, oldest first."""
        try:
            paths = [p for p in self.fs.find(join(self.root, "events")) if p.endswith(".jsonl")]
        except FileNotFoundError:
            return []
        return sorted(paths, key=lambda p: p[len(self.root) :].replace(".jsonl", ""))

    def read_events(self, job_id: str | None = None) -> Journal:
        """Every event in the journal (optionally one job's), with any torn tails noted."""
        journal = Journal([], [])
        paths = self.event_files()
        contents = self.fs.cat(paths, on_error="omit") if paths else {}
        for path in paths:
            data = contents.get(path, b"")
            lines = data.split(b"\n")
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise ValueError(f"a JSON {type(item).__name__}, not an event")
                except ValueError:
                    sealed = number < len(lines) and b"journal_torn_tail_sealed" in lines[number]
                    if number == len(lines) or sealed:  # a torn append (sealed by the next one)
                        journal.torn.append(f"{to_url(self.fs, path)}:{number}")
                        continue
                    raise StateError(
                        f"event journal {to_url(self.fs, path)} line {number} is not JSON; "
                        "run `winnow gateway start --recover` to truncate and replay it"
                    ) from None
                if job_id is None or item.get("job_id") == job_id:
                    journal.events.append(item)
        return journal

    # -- source index ------------------------------------------------------
    def source_index(self, identity: str) -> dict[str, Any] | None:
        """Cached facts (row counts, Parquet row-group size) of input file ``identity``, or None."""
        try:
            return dict(
                json.loads(self.fs.cat_file(join(self.root, "sources", f"{identity}.json")))
            )
        except FileNotFoundError:
            return None

    def write_source_index(self, identity: str, data: dict[str, Any]) -> None:
        """Cache facts about the input file with ``identity`` (written atomically)."""
        write_atomic(
            self.fs, join(self.root, "sources", f"{identity}.json"), json.dumps(data).encode()
        )

    def read_inputs(self, pipeline: str) -> dict[str, Any]:
        """What the last run of ``pipeline`` read (file identities, batch size), or {}."""
        try:
            data = json.loads(self.fs.cat_file(join(self.root, "inputs", f"{pipeline}.json")))
        except (FileNotFoundError, ValueError):
            return {}  # only explains reruns: a missing or damaged one costs nothing
        return dict(data) if isinstance(data, dict) else {}

    def write_inputs(self, pipeline: str, data: dict[str, Any]) -> None:
        """Record what this run of ``pipeline`` read, for the next plan to explain what changed.

        Unchanged inputs (every rerun of an unchanged input) leave the file as
        it is: no write, no fsync, no PUT.
        """
        body = json.dumps(data)
        if self.read_inputs(pipeline) == json.loads(body):
            return
        write_atomic(self.fs, join(self.root, "inputs", f"{pipeline}.json"), body.encode())

    # -- files by name: the gateway's own, and a migration's copy -------------
    def files(self, folder: str = "") -> dict[str, int]:
        """Every file under ``folder`` (default: all), freshly listed: name (from the root) -> size."""
        base = join(self.root, folder) if folder else self.root
        refresh(self.fs, base)
        try:
            listing = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {
            self._name(path): int(info.get("size") or 0)
            for path, info in listing.items()
            if info.get("type", "file") != "directory"
        }

    def read_file(self, name: str) -> bytes:
        """One file's bytes; ``FileNotFoundError`` when there is none."""
        data: bytes = self.fs.cat_file(join(self.root, name))
        return data

    def read_files(self, names: Iterable[str]) -> dict[str, bytes]:
        """Several files in one read (concurrent on object stores); unreadable ones left out."""
        paths = [join(self.root, name) for name in names]
        contents = self.fs.cat(paths, on_error="omit") if paths else {}
        return {self._name(path): data for path, data in contents.items()}

    def write_file(self, name: str, data: bytes) -> str:
        """Write one file atomically (see ``write_atomic``); return its URL."""
        path = join(self.root, name)
        write_atomic(self.fs, path, data)
        return to_url(self.fs, path)

    def file_url(self, name: str) -> str:
        """The URL of the file ``name`` (relative to the root), whether or not it exists."""
        return to_url(self.fs, join(self.root, name))

    def clear(self) -> None:
        """Remove the root with everything under it (``migrate-state --force``)."""
        self.fs.rm(self.root, recursive=True)

    def place(self) -> tuple[str, str]:
        """Where the root lies: its filesystem (as the URL of ``/``) and its path."""
        return self.fs.unstrip_protocol("/"), self.root.rstrip("/")

    def _name(self, path: str) -> str:
        return posixpath.relpath(path, self.root.rstrip("/"))

    def display(self) -> str:
        """The root's URL, for messages."""
        return to_url(self.fs, self.root)


@dataclass
class Journal:
    """The events read from the journal.

    Attributes:
        events: the events, in journal order.
        torn: ``file:line`` of each unterminated last line (tolerated, skipped).
    """

    events: list[dict[str, Any]]
    torn: list[str]  # "file:line" of unterminated last lines (tolerated)


def event(kind: str, job_id: str, **fields: Any) -> dict[str, Any]:
    """A journal event of type ``kind`` for ``job_id``, stamped with the time (UTC) and host."""
    return {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "type": kind,
        "job_id": job_id,
        "host": socket.gethostname(),
        **fields,
    }


def now_iso() -> str:
    """The time now, UTC, as an ISO 8601 string with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def monotonic() -> float:
    """``time.monotonic()``: seconds from an arbitrary start, for measuring durations."""
    return time.monotonic()
