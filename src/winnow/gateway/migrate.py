"""State version migration: an explicit copy to a new root, never a change in place.

``migrate_state`` copies every file of a state root to an empty target root
(any fsspec URLs, on the same or different filesystems), then writes the
target's ``VERSION`` (``state/v2``) and ``migration.json``. The source is only
read, so a failed or regretted migration costs nothing but the target.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from winnow.errors import StateError, UsageError
from winnow.storage.fs import is_temporary
from winnow.storage.state import KNOWN_VERSIONS, STATE_VERSION, VERSION_FILE, State, now_iso

TARGET_VERSION = "state/v2"
KINDS = ("jobs", "stages", "events", "snapshots", "sources", "inputs")
# Not state but a moment of it: a lock belongs to a live run on the source, and
# temporaries (storage.fs.is_temporary) are writes that never finished.
_SKIP_DIRS = ("locks",)
MIGRATION_FILE = "migration.json"
_OWN_FILES = (VERSION_FILE, MIGRATION_FILE)
_STATE_ENTRIES = {*KINDS, *_SKIP_DIRS, *_OWN_FILES, "jobs-archive", "gateway", "backups"}


def migrate_state(
    source_url: str,
    target_url: str,
    force: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy the state at ``source_url`` to ``target_url`` and mark the copy ``state/v2``.

    Returns:
        What ``migration.json`` holds: source, target, from_version, to_version,
        started_at, finished_at, ``copied`` (files by top-level folder: jobs,
        stages, events, snapshots, sources, other), ``bytes``, ``skipped``.

    Raises:
        UsageError: source and target overlap, the source is empty or of an
            unknown version, or the target is not empty and ``force`` is off.
    """
    started = now_iso()
    source = State(source_url, storage_options)
    target = State(target_url, storage_options)
    _check_roots(source, target)
    found = source.version()
    files = _check_migratable(source, target, found, force)
    copied, skipped, written = _copy(source, target, files)
    _check_copy(source, target, written)
    version_file = target.mark_version(TARGET_VERSION)
    summary = {
        "source": source.display(),
        "target": target.display(),
        "from_version": found or STATE_VERSION,
        "to_version": TARGET_VERSION,
        "started_at": started,
        "finished_at": now_iso(),
        "copied": dict(copied),
        "bytes": sum(written.values()),
        "skipped": dict(skipped),
    }
    migration_file = target.write_file(
        MIGRATION_FILE, json.dumps(summary, indent=2, sort_keys=True).encode()
    )
    summary["version_file"] = version_file
    summary["migration_file"] = migration_file
    return summary


def _check_migratable(
    source: State, target: State, found: str | None, force: bool
) -> dict[str, int]:
    """The source's files, once the source is known and the target empty (or cleared)."""
    if found is not None and found not in KNOWN_VERSIONS:
        raise UsageError(
            f"source {source.display()} is version {found!r}, which this Winnow does not "
            f"read ({', '.join(KNOWN_VERSIONS)}); migrate it with the Winnow that wrote it"
        )
    files = source.files()
    if not files:
        raise UsageError(f"source {source.display()} holds no state; check --source-root")
    existing = target.files()
    if existing and not force:
        raise UsageError(
            f"target {target.display()} is not empty ({len(existing)} files); pick an empty "
            "--target-root, or pass --force to clear it and copy again"
        )
    if existing:
        _check_clearable(target, existing)
        target.clear()
    return files


def _copy(
    source: State, target: State, files: dict[str, int]
) -> tuple[Counter[str], Counter[str], dict[str, int]]:
    """Copy every file worth keeping; counts copied by kind, skipped by reason, bytes by file."""
    copied: Counter[str] = Counter({k: 0 for k in (*KINDS, "other")})
    skipped: Counter[str] = Counter()
    written: dict[str, int] = {}
    for rel in sorted(files):
        top = rel.split("/", 1)[0]
        if rel in _OWN_FILES:
            continue  # written fresh by migrate_state
        if top in _SKIP_DIRS:
            skipped[top] += 1
            continue
        if is_temporary(rel):
            skipped["temporary"] += 1
            continue
        data = source.read_file(rel)
        target.write_file(rel, data)
        written[rel] = len(data)
        copied[top if top in KINDS else "other"] += 1
    return copied, skipped, written


def _check_roots(source: State, target: State) -> None:
    """Refuse roots that overlap: clearing or filling one would change the other."""
    (src_fs, src), (dst_fs, dst) = source.place(), target.place()
    if src_fs != dst_fs:
        return
    if src == dst:
        raise UsageError(
            f"source and target are the same root ({source.display()}); a migration is a copy "
            "to a new root, e.g. --target-root .winnow/state/v2"
        )
    if dst.startswith(src + "/"):
        raise UsageError(
            f"target {target.display()} is inside the source {source.display()}; "
            "pick a --target-root outside it"
        )
    if src.startswith(dst + "/"):
        raise UsageError(
            f"source {source.display()} is inside the target {target.display()}; "
            "pick a --target-root that does not contain it"
        )


def _check_clearable(target: State, existing: dict[str, int]) -> None:
    """--force clears a state root, never a folder that holds anything else."""
    foreign = sorted({rel.split("/", 1)[0] for rel in existing} - _STATE_ENTRIES)
    if foreign:
        raise UsageError(
            f"target {target.display()} holds files that are not Winnow state "
            f"({', '.join(foreign[:5])}); --force clears only a state root. Pick another "
            "--target-root"
        )


def _check_copy(source: State, target: State, written: dict[str, int]) -> None:
    """Every copied file is in a fresh listing of the target, at the size written."""
    found = target.files()
    wrong = [rel for rel, size in written.items() if found.get(rel) != size]
    if wrong:
        raise StateError(
            f"migration to {target.display()} is incomplete: {len(wrong)} files missing or "
            f"short (e.g. {wrong[:3]}); the source {source.display()} is untouched. "
            "Rerun with --force"
        )
