"""``winnow verify``: check everything the state references, and mend the state.

Covered: the output artifact and the quarantine artifact of every SUCCEEDED
checkpoint (size from one listing per artifact root; ``full`` re-hashes and
decodes), the run manifest of every job (it exists and parses, and every
artifact it lists is there with the recorded size, re-hashed with ``full``),
and the state files themselves: checkpoint lines and job records that cannot
be read are reported with file and line, and ``repair`` mends them after a
backup. A bad artifact gets a FAILED checkpoint so the next run recomputes it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from winnow.errors import IntegrityError
from winnow.records import BatchStatus, ErrorRecord, record_artifacts
from winnow.storage.artifacts import ArtifactRef, ArtifactStore
from winnow.storage.checkpoints import Damage
from winnow.storage.manifests import manifest_entries, manifest_refs, read_manifest
from winnow.storage.state import State, event

OUTPUT, QUARANTINE = "output", "quarantine"
MANIFEST_FIX = "rerun the pipeline: its run writes a new manifest"


def verify_state(
    state: State,
    full: bool = False,
    storage_options: dict[str, Any] | None = None,
    mark: bool = True,
    repair: bool = False,
) -> dict[str, Any]:
    """Re-check every artifact and manifest the state references, and the state's own files.

    Args:
        state: the state to check.
        full: re-hash and decode every artifact instead of checking its size.
        storage_options: for the artifact stores and manifests (default: the state's).
        mark: give each checkpoint whose output or quarantine artifact is bad a
            FAILED record (error type IntegrityError), so the next run recomputes it.
        repair: rewrite damaged checkpoint segments without their bad lines and
            set damaged job records aside, each after a backup under
            ``<state>/backups/repair-<UTC time>/``.

    Returns:
        ``checked`` (artifacts), ``mismatches`` (stage, key, artifact: output or
        quarantine, uri, problem), ``manifests`` (manifests checked),
        ``manifest_problems`` (job_id, manifest, problem, fix), ``damage``
        ("file:line: reason" of each unreadable state line or file),
        ``repairs`` (what ``repair`` did) and ``full``.
    """
    storage_options = state.storage_options if storage_options is None else storage_options
    checker = _Checker(full, storage_options)
    mismatches, damage = _check_checkpoints(state, checker, mark)
    listing = state.job_listing()
    damage.extend(listing.damaged)
    jobs = [j for j in listing.jobs if j.get("manifest")]
    manifest_problems = [p for job in jobs for p in _check_manifest(job, checker)]
    repairs = state.repair(damage) if repair else []
    events = [
        event("integrity", "verify", stage=p["stage"], key=p["key"], message=p["problem"])
        for p in mismatches
    ]
    events += [
        event("integrity", "verify", manifest=p["manifest"], message=p["problem"])
        for p in manifest_problems
    ]
    events += [event("state_repaired", "verify", **r) for r in repairs]
    state.append_events(events)
    return {
        "checked": checker.checked,
        "mismatches": mismatches,
        "manifests": len(jobs),
        "manifest_problems": manifest_problems,
        "damage": [str(d) for d in damage],
        "repairs": repairs,
        "full": full,
    }


def _check_checkpoints(
    state: State, checker: _Checker, mark: bool
) -> tuple[list[dict[str, Any]], list[Damage]]:
    """Check every SUCCEEDED checkpoint's artifacts.

    With ``mark``, a checkpoint whose artifact is bad gets a FAILED record.
    Returns the mismatches and the damaged checkpoint lines met on the way.
    """
    checkpoints = state.checkpoints(job_id=f"verify-{int(time.time())}")
    damage: list[Damage] = []
    mismatches: list[dict[str, Any]] = []
    for stage in checkpoints.stages():
        loaded = checkpoints.load(stage)
        damage.extend(loaded.damage)
        records = [r for r in loaded.records.values() if r["status"] == BatchStatus.SUCCEEDED]
        for rec, problems in zip(records, checker.check_records(records), strict=True):
            if not problems:
                continue
            mismatches.extend({"stage": stage, "key": rec["key"], **p} for p in problems)
            if mark:
                message = "; ".join(f"{p['artifact']} {p['problem']}" for p in problems)
                error = ErrorRecord(IntegrityError.__name__, message, "").to_dict()
                checkpoints.append(
                    {**rec, "status": BatchStatus.FAILED, "ts": time.time(), "error": error}
                )
    checkpoints.flush()
    return mismatches, damage


def _check_manifest(job: dict[str, Any], checker: _Checker) -> list[dict[str, Any]]:
    """What is wrong with a job's run manifest and the artifacts it lists."""
    url = str(job["manifest"])
    base = {"job_id": job.get("job_id"), "manifest": url, "fix": MANIFEST_FIX}
    try:
        manifest = read_manifest(url, checker.storage_options, fresh=True)
    except FileNotFoundError:
        return [{**base, "problem": "the manifest is missing"}]
    except ValueError as exc:
        return [{**base, "problem": f"the manifest does not parse ({type(exc).__name__}: {exc})"}]
    try:
        entries = manifest_entries(manifest)
        refs = manifest_refs(manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [{**base, "problem": f"the manifest does not parse ({type(exc).__name__}: {exc})"}]
    return [
        {**base, "batch": entry.get("batch"), "problem": problem}
        for entry, problem in zip(entries, checker.check(refs), strict=True)
        if problem is not None
    ]


class _Checker:
    """Checks artifacts, each reference once however many records and manifests hold it."""

    def __init__(self, full: bool, storage_options: dict[str, Any] | None) -> None:
        self.full = full
        self.storage_options = storage_options
        self.stores: dict[str, ArtifactStore] = {}
        self.sizes: dict[str, dict[str, int]] = {}
        self.results: dict[ArtifactRef, str | None] = {}

    @property
    def checked(self) -> int:
        return len(self.results)

    def check_records(self, records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Per checkpoint record: a problem entry for each of its artifacts that is bad."""
        listed = [[(which, raw, _ref(raw)) for which, raw in _artifacts(rec)] for rec in records]
        self.check([ref for pairs in listed for _, _, ref in pairs if isinstance(ref, ArtifactRef)])
        out = []
        for pairs in listed:
            problems = []
            for which, raw, ref in pairs:
                problem = self.results[ref] if isinstance(ref, ArtifactRef) else ref
                if problem is not None:
                    uri = raw.get("uri") if isinstance(raw, dict) else None
                    problems.append({"artifact": which, "uri": uri, "problem": problem})
            out.append(problems)
        return out

    def check(self, refs: list[ArtifactRef]) -> list[str | None]:
        """What is wrong with each artifact, or None."""
        todo = list(dict.fromkeys(r for r in refs if r not in self.results))
        with ThreadPoolExecutor(max_workers=8 if self.full and len(todo) > 1 else 1) as pool:
            for ref, problem in zip(todo, pool.map(self._check_one, todo), strict=True):
                self.results[ref] = problem
        return [self.results[r] for r in refs]

    def _check_one(self, ref: ArtifactRef) -> str | None:
        store = ArtifactStore.for_uri(ref.uri, self.storage_options, self.stores)
        if not self.full and store.root_url not in self.sizes:
            self.sizes[store.root_url] = store.sizes()
        problem = store.check(ref, full=self.full, listing=self.sizes.get(store.root_url))
        return None if problem is None else str(problem)


def _artifacts(rec: dict[str, Any]) -> list[tuple[str, Any]]:
    """A checkpoint record's artifacts: its output, and its quarantine if it has one."""
    names = {"artifact": OUTPUT, "quarantine artifact": QUARANTINE}
    return [(names.get(what, what), ref) for what, ref in record_artifacts(rec)]


def _ref(raw: Any) -> ArtifactRef | str:
    """The artifact reference a record holds, or why it holds none that can be checked."""
    try:
        return ArtifactRef(**raw)
    except TypeError:  # not a mapping, or fields missing or unknown
        return f"the checkpoint's artifact reference is malformed: {str(raw)[:200]}"
