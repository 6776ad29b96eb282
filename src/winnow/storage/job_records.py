"""Job records in a state: ``jobs/<job_id>.json``, written whole, read checked.

``JobRecords`` is the part of ``State`` that reads and writes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from winnow.errors import StateError
from winnow.storage.checkpoints import Damage
from winnow.storage.fs import join, modified_at, to_url, write_atomic

REPAIR_FIX = (
    "`winnow verify --repair` mends it (a checkpoint segment is rewritten without its bad "
    "lines, a job record set aside; originals are kept under <state>/backups/)"
)


class JobRecords:
    """Job records under a state root (``State`` is one; it sets ``fs``, ``root`` and ``url``)."""

    fs: Any
    root: str
    url: str

    def job_path(self, job_id: str) -> str:
        """The file of ``job_id``'s record.

        Raises:
            StateError: ``job_id`` is not a name that can be a file name.
        """
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise StateError(f"{job_id!r} is not a job id")
        return join(self.root, "jobs", f"{job_id}.json")

    def write_job(self, record: dict[str, Any]) -> None:
        """Write a job record (atomically, replacing any earlier one of that ``job_id``)."""
        data = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
        write_atomic(self.fs, self.job_path(record["job_id"]), data)

    def read_job(self, job_id: str) -> dict[str, Any]:
        """The record of ``job_id``.

        Raises:
            StateError: there is no such job, or its file is not a job record.
        """
        path = self.job_path(job_id)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise StateError(
                f"no job {job_id!r} in state {self.url!r}; `winnow jobs` lists the jobs"
            ) from None
        record, reason = _job_record(data)
        if record is None:
            raise StateError(
                f"job record {to_url(self.fs, path)} is damaged ({reason}); "
                f"{REPAIR_FIX}, or delete the file"
            )
        return record

    def job_as_written(self, job_id: str) -> tuple[Any, datetime | None] | None:
        """A job file's JSON (unchecked: ValueError if none) and its write time; None if missing."""
        path = self.job_path(job_id)
        try:
            record = json.loads(self.fs.cat_file(path))
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return record, modified_at(info)

    def list_jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every readable job record, newest first (see ``job_listing`` for damaged ones).

        With ``status``, only the records in that status: a file whose bytes do
        not hold it at all (as JSON writes it) is not parsed, so finding the
        RUNNING jobs of a long history parses only the few that may be.
        """
        if status is None:
            return self.job_listing().jobs
        marker = json.dumps(str(status)).encode()
        jobs = self.job_listing(lambda data: marker in data).jobs
        return [j for j in jobs if j.get("status") == status]

    def job_listing(self, parse: Callable[[bytes], bool] | None = None) -> JobListing:
        """Every job record, newest first, and the job files that are not one (skipped).

        ``parse``, when given, picks the files worth parsing from their bytes.
        """
        contents = self._job_files()
        listing = JobListing([], [])
        for path in sorted(contents):
            if parse is not None and not parse(contents[path]):
                continue
            record, reason = _job_record(contents[path])
            if record is None:
                listing.damaged.append(Damage(path, to_url(self.fs, path), 0, reason))
            else:
                listing.jobs.append(record)
        listing.jobs.sort(key=lambda j: str(j.get("created_at", "")), reverse=True)
        return listing

    def newest_job(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The first record of ``list_jobs()`` that ``match`` accepts, parsing few files.

        Files are taken newest first by the top-level ``created_at`` read from
        their bytes where ``write_job``'s layout shows it (its lines at two
        spaces' indent are the top-level keys; a raw newline occurs nowhere
        else in JSON), so finding the last run of a pipeline in a long history
        parses one or two records, not all. A file in another layout is parsed
        to learn its time.
        """
        order: list[tuple[str, str]] = []  # (created_at, path), in path order
        parsed: dict[str, dict[str, Any] | None] = {}
        contents = self._job_files()
        for path in sorted(contents):
            hint = _CREATED_AT.search(contents[path])
            if hint is not None:
                order.append((json.loads(b'"' + hint.group(1) + b'"'), path))
                continue
            record = parsed[path] = _job_record(contents[path])[0]
            if record is not None:
                order.append((str(record.get("created_at", "")), path))
        order.sort(key=lambda entry: entry[0], reverse=True)  # stable, as list_jobs sorts
        for _, path in order:
            record = parsed[path] if path in parsed else _job_record(contents[path])[0]
            if record is not None and match(record):
                return record
        return None

    def _job_files(self) -> dict[str, bytes]:
        """Every job file's bytes, by path."""
        base = join(self.root, "jobs")
        try:
            paths = [p for p in self.fs.find(base) if p.endswith(".json")]
        except FileNotFoundError:
            return {}
        contents: dict[str, bytes] = self.fs.cat(paths, on_error="omit") if paths else {}
        return contents


# A top-level created_at as write_job lays a record out (indent=2): "\n  " only precedes
# a top-level key, and the ISO time holds no quote.
_CREATED_AT = re.compile(rb'\n  "created_at": "([^"\\]*)"')


@dataclass
class JobListing:
    """The job records of a state.

    Attributes:
        jobs: the readable records, newest first.
        damaged: job files that are not a job record (skipped).
    """

    jobs: list[dict[str, Any]]  # newest first
    damaged: list[Damage]  # job files that are not a job record (skipped)


def _job_record(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The job record in ``data``, or None and why it is not one."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        return None, f"not JSON ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(value, dict) or not isinstance(value.get("job_id"), str):
        return None, "not a job record (a JSON object with a job_id)"
    return value, ""
