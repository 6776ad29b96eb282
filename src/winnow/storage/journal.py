"""Event journal maintenance: recover a damaged journal, compact old days, archive jobs.

The journal is ``events/YYYY-MM-DD.jsonl`` on a local disk and immutable parts
``events/YYYY-MM-DD/<part>.jsonl`` on object stores (see ``State.append_events``).
Two folders beside the days are not journal and ``State.read_events`` never
reads them:

- ``events/corrupt/``: the original bytes of every file ``recover`` rewrote;
- ``events/archive/``: gzip archives of compacted days. These are cold
  storage: status, inspect and snapshots count only the hot journal.

Maintenance rewrites or removes journal files, so run it when no run is
appending to the days it touches: ``recover`` at gateway start, compaction on
days before the kept ones (no run appends to an old day).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from winnow.errors import StateError, UsageError
from winnow.records import JOB_TERMINAL
from winnow.storage.fs import is_local, join, refresh, to_url, write_atomic
from winnow.storage.state import State

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Scan:
    """One journal file split into its event lines and what is wrong with it."""

    good: list[bytes] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)  # 1-based numbers of undecodable lines
    torn: int | None = None  # number of an unterminated undecodable last line
    unterminated: bool = False  # the file does not end with a newline

    @property
    def clean(self) -> bool:
        """Nothing to repair: no bad line, no torn tail, no unterminated last line."""
        return not self.bad and self.torn is None and not self.unterminated


def scan(data: bytes) -> Scan:
    """Classify every line: an event (a JSON object), corrupt, or a torn tail.

    A line is corrupt when it is not valid UTF-8 JSON or not an object. The
    unterminated last line is a torn append when it does not parse; a complete
    object whose newline was lost is kept.
    """
    out = Scan()
    *lines, tail = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if _is_event(line):
            out.good.append(line)
        else:
            out.bad.append(number)
    if tail.strip():
        out.unterminated = True
        if _is_event(tail):
            out.good.append(tail)
        else:
            out.torn = len(lines) + 1
    elif tail:
        out.unterminated = True  # trailing blanks: rewrite to end on a newline
    return out


def _is_event(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return False


def event_totals(events: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"total": n, "by_type": {type: n}}`` of a list of events."""
    by_type = Counter(str(e.get("type", "unknown")) for e in events)
    return {"total": len(events), "by_type": dict(sorted(by_type.items()))}


# -- recover ----------------------------------------------------------------
def journal_size(state: State) -> tuple[int, int]:
    """How many journal files and parts there are, and their bytes in all."""
    files = state.event_files()
    return len(files), sum(int(state.fs.size(path) or 0) for path in files)


def recover(state: State) -> dict[str, Any]:
    """Repair the journal so it reads again, then replay it.

    Every file with a torn tail or undecodable lines is copied as it was to
    ``events/corrupt/<file>.<timestamp>.bak`` and rewritten with its valid
    lines only, in order. Valid lines after a bad one are kept, not cut off: an
    append after a crash terminates the torn line and writes below it, so a bad
    line mid-file is usually a torn append followed by the rest of the day.

    Returns:
        ``files`` (how many were read), ``repaired`` (per file: kept, dropped line
        numbers, torn, backup), ``lines_kept``, ``lines_dropped``, ``backups``, and
        ``replayed``: the event totals by type read back after the repair.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    events_root = join(state.root, "events")
    paths = state.event_files()
    contents = state.fs.cat(paths, on_error="omit") if paths else {}
    repaired: list[dict[str, Any]] = []
    kept = dropped = 0
    for path in paths:
        data = contents.get(path)
        if data is None:
            continue  # removed since the listing (a concurrent compaction)
        result = scan(data)
        kept += len(result.good)
        if result.clean:
            continue
        name = posixpath.relpath(path, events_root).replace("/", "_")
        backup = join(events_root, "corrupt", f"{name}.{stamp}.bak")
        write_atomic(state.fs, backup, data)
        write_atomic(state.fs, path, b"".join(line + b"\n" for line in result.good))
        lost = [*result.bad, *([result.torn] if result.torn else [])]
        dropped += len(lost)
        repaired.append(
            {
                "file": to_url(state.fs, path),
                "kept": len(result.good),
                "dropped_lines": lost,
                "torn": result.torn is not None,
                "backup": to_url(state.fs, backup),
            }
        )
    journal = state.read_events()  # raises if the repair left anything unreadable
    return {
        "files": len(paths),
        "repaired": repaired,
        "lines_kept": kept,
        "lines_dropped": dropped,
        "backups": [r["backup"] for r in repaired],
        "replayed": event_totals(journal.events),
    }


# -- compact ----------------------------------------------------------------
def compact_events(state: State, keep_recent_days: int) -> dict[str, Any]:
    """Move every day before the ``keep_recent_days`` most recent ones into one gzip archive.

    Today counts as one of the kept days, so ``keep_recent_days=1`` compacts
    everything before today. The days' events are concatenated in journal
    order into ``events/archive/events-<first>_<last>.jsonl.gz``; the archive
    is read back, decompressed and checked (digest and line count) before any
    source is removed. Torn tails are not events and are left out (listed in
    ``torn``); a corrupt line mid-file stops the compaction, nothing removed.

    Raises:
        UsageError: ``keep_recent_days`` < 1 (today's journal is still appended to).
        StateError: a source has a corrupt line, or the archive did not read back.
    """
    if keep_recent_days < 1:
        raise UsageError(
            f"--keep-recent-days {keep_recent_days}: keep at least 1 day; today's journal "
            "is still being appended to"
        )
    today = datetime.now(UTC).date()
    cutoff = (today - timedelta(days=keep_recent_days - 1)).isoformat()
    events_root = join(state.root, "events")
    sources: list[tuple[str, str]] = []  # (day, path), journal order
    for path in state.event_files():
        day = posixpath.relpath(path, events_root).split("/", 1)[0].removesuffix(".jsonl")
        if _DAY.fullmatch(day) and day < cutoff:
            sources.append((day, path))
    result: dict[str, Any] = {
        "compacted": [],
        "archive": None,
        "events": 0,
        "days": sorted({d for d, _ in sources}),
        "keep_recent_days": keep_recent_days,
        "kept_from": cutoff,
        "torn": [],
    }
    if not sources:
        return result
    paths = [p for _, p in sources]
    lines = _good_lines(state, paths, result["torn"])
    payload = b"".join(line + b"\n" for line in lines)
    archive = _archive_path(state, result["days"][0], result["days"][-1])
    write_atomic(state.fs, archive, gzip.compress(payload, mtime=0))
    _check_archive(state, archive, payload, len(lines))
    for path in paths:
        state.fs.rm_file(path)
    _remove_empty_day_folders(state, {posixpath.dirname(p) for p in paths} - {events_root})
    result.update(
        compacted=[to_url(state.fs, p) for p in paths],
        archive=to_url(state.fs, archive),
        events=len(lines),
    )
    return result


def _good_lines(state: State, paths: list[str], torn: list[str]) -> list[bytes]:
    """Every event line of ``paths`` in order; torn tails are listed in ``torn``.

    Raises:
        StateError: a line mid-file is not JSON (nothing is compacted then).
    """
    contents = state.fs.cat(paths)
    lines: list[bytes] = []
    for path in paths:
        found = scan(contents[path])
        if found.bad:
            raise StateError(
                f"event journal {to_url(state.fs, path)} line {found.bad[0]} is not JSON; "
                "nothing was compacted. Run `winnow gateway start --recover` to repair it first"
            )
        if found.torn:
            torn.append(f"{to_url(state.fs, path)}:{found.torn}")
        lines.extend(found.good)
    return lines


def _archive_path(state: State, first: str, last: str) -> str:
    base = join(state.root, "events", "archive", f"events-{first}_{last}")
    path = f"{base}.jsonl.gz"
    if state.fs.exists(path):  # the same range again (late parts): never overwrite
        path = f"{base}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.jsonl.gz"
    return path


def _check_archive(state: State, archive: str, payload: bytes, count: int) -> None:
    refresh(state.fs, archive)
    try:
        back = gzip.decompress(state.fs.cat_file(archive))
    except (OSError, EOFError) as exc:
        back, problem = b"", str(exc)
    else:
        problem = ""
    if hashlib.sha256(back).digest() != hashlib.sha256(payload).digest() or (
        back.count(b"\n") != count
    ):
        with contextlib.suppress(FileNotFoundError):
            state.fs.rm_file(archive)
        raise StateError(
            f"event archive {to_url(state.fs, archive)} did not read back as written "
            f"({problem or 'content differs'}); no journal file was removed. Retry the compaction"
        )


def _remove_empty_day_folders(state: State, folders: set[str]) -> None:
    if not is_local(state.fs) and "memory" not in state.fs.protocol:
        return  # object stores have no folders to remove
    for folder in sorted(folders):
        with contextlib.suppress(OSError):  # a part written since keeps it
            state.fs.rmdir(folder)


# -- archive jobs -------------------------------------------------------------
def archive_jobs(
    state: State, older_than_days: float, now: datetime | None = None
) -> dict[str, Any]:
    """Move terminal job records created more than ``older_than_days`` ago out of ``jobs/``.

    A record moves to ``jobs-archive/<YYYY-MM>/<job_id>.json`` (its creation
    month): written, read back, then the hot copy removed, unless it changed
    meanwhile. PENDING and RUNNING jobs never move. ``winnow jobs`` and
    ``inspect job`` read ``jobs/`` only.
    """
    if older_than_days < 0:
        raise UsageError(f"--older-than must not be negative (got {older_than_days} days)")
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=older_than_days)
    base = join(state.root, "jobs")
    try:
        paths = sorted(p for p in state.fs.find(base) if p.endswith(".json"))
    except FileNotFoundError:
        paths = []
    contents = state.fs.cat(paths, on_error="omit") if paths else {}
    archived: list[dict[str, Any]] = []
    skipped: list[str] = []
    kept = 0
    for path, data in contents.items():
        try:
            record = json.loads(data)
        except ValueError:
            skipped.append(to_url(state.fs, path))
            continue
        created = _parse_time(record.get("created_at"))
        if created is None:
            skipped.append(to_url(state.fs, path))
            continue
        if record.get("status") not in JOB_TERMINAL or created >= cutoff:
            kept += 1
            continue
        target = join(state.root, "jobs-archive", f"{created:%Y-%m}", posixpath.basename(path))
        write_atomic(state.fs, target, data)
        if state.fs.cat_file(target) != data or state.fs.cat_file(path) != data:
            state.fs.rm_file(target)  # rewritten meanwhile (or a bad write): leave it hot
            kept += 1
            continue
        state.fs.rm_file(path)
        archived.append(
            {
                "job_id": record.get("job_id"),
                "status": record.get("status"),
                "created_at": record.get("created_at"),
                "path": to_url(state.fs, target),
            }
        )
    return {
        "archived": archived,
        "kept": kept,
        "skipped": skipped,
        "cutoff": cutoff.isoformat(timespec="seconds"),
        "older_than_days": older_than_days,
    }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration(text: str) -> float:
    """Days in ``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` or a bare number of days.

    Raises:
        UsageError: the text is none of those.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([wdhm]?)\s*", text.lower())
    if not match:
        raise UsageError(
            f"{text!r} is not a duration; write a number with a unit, e.g. 30d, 12h, 90m, 2w"
        )
    value, unit = float(match.group(1)), match.group(2) or "d"
    return value * {"w": 7.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440}[unit]
