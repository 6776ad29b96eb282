"""What a table remembers of Winnow's exports into it: one record per commit.

Every commit an export makes carries, in the table's own commit metadata
(Delta commit info, Iceberg snapshot summary, Lance transaction properties),
the export's key, the job, the pipeline, the digests of the artifacts whose
rows it added, and running totals. Reading them back is how an export knows
it was done already (same key), which batches a later run adds (digests not
recorded yet), and whether the table holds anything else (its row count
against the rows the records account for).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from winnow.errors import UsageError

PREFIX = "winnow."


def export_key(pipeline: str, digests: Sequence[str]) -> str:
    """The key of one job's export: SHA-256 of the pipeline and its ordered artifact digests.

    Two jobs whose outputs are byte for byte the same (a rerun that skipped
    everything) have the same key, so exporting either after the other adds nothing.
    """
    body = json.dumps({"pipeline": pipeline, "artifacts": list(digests)}, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class TableCommit:
    """Winnow's record of one commit into a table, as stored in its commit metadata."""

    version: str  # the table's name for the commit: Delta/Lance version, Iceberg snapshot id
    key: str
    job_id: str
    pipeline: str
    artifacts: tuple[str, ...]  # digests of the artifacts whose rows the commit added
    artifacts_total: int  # artifacts recorded by all Winnow commits up to this one
    rows: int  # rows the commit added

    def properties(self) -> dict[str, str]:
        """The commit metadata to write (strings: Iceberg and Lance take nothing else)."""
        return {
            f"{PREFIX}key": self.key,
            f"{PREFIX}job_id": self.job_id,
            f"{PREFIX}pipeline": self.pipeline,
            f"{PREFIX}artifacts": json.dumps(list(self.artifacts), separators=(",", ":")),
            f"{PREFIX}artifacts_total": str(self.artifacts_total),
            f"{PREFIX}rows": str(self.rows),
        }

    @classmethod
    def parse(cls, version: str, metadata: Mapping[str, Any] | None) -> TableCommit | None:
        """The record in one commit's metadata; ``None`` for a commit Winnow did not make."""
        if not metadata or f"{PREFIX}key" not in metadata:
            return None
        try:
            return cls(
                version=version,
                key=str(metadata[f"{PREFIX}key"]),
                job_id=str(metadata[f"{PREFIX}job_id"]),
                pipeline=str(metadata[f"{PREFIX}pipeline"]),
                artifacts=tuple(json.loads(metadata[f"{PREFIX}artifacts"])),
                artifacts_total=int(metadata[f"{PREFIX}artifacts_total"]),
                rows=int(metadata[f"{PREFIX}rows"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(
                f"commit {version} has a damaged Winnow export record ({exc!r}); "
                "Fix: export to a new table"
            ) from None


class TableHistory:
    """Winnow's commits in a table's current lineage, oldest first."""

    def __init__(self, commits: list[TableCommit], where: str) -> None:
        self.commits = commits
        self.where = where

    def check(self, pipeline: str, table_rows: int) -> None:
        """Refuse a table that another pipeline, writer or lost history put rows in.

        Raises:
            UsageError: the table holds Winnow exports of another pipeline; its
                history of Winnow's exports was expired in part (the digests it
                recorded are gone); or it holds rows the records do not account
                for (another writer, a delete, a restore).
        """
        others = sorted({c.pipeline for c in self.commits} - {pipeline})
        if others:
            raise UsageError(
                f"{self.where} holds exports of pipeline {others[0]!r}, not {pipeline!r}; "
                "nothing was written. Fix: export each pipeline to a table of its own"
            )
        recorded = sum(len(c.artifacts) for c in self.commits)
        if self.commits and recorded != self.commits[-1].artifacts_total:
            raise UsageError(
                f"{self.where}: its history lists {recorded} exported artifacts, its latest "
                f"Winnow commit counts {self.commits[-1].artifacts_total}: older commits were "
                "expired (log cleanup, snapshot expiry, version cleanup), so Winnow cannot "
                "tell which batches it holds; nothing was written. Fix: export to a new table"
            )
        rows = sum(c.rows for c in self.commits)
        if table_rows != rows:
            raise UsageError(
                f"{self.where} holds {table_rows:,} rows; Winnow's exports into it added "
                f"{rows:,}: rows were added, deleted or restored by another writer, so an "
                "incremental export cannot tell what it holds; nothing was written. "
                "Fix: export to a new table"
            )

    def find(self, key: str) -> TableCommit | None:
        """The commit that exported ``key`` already, if any."""
        return next((c for c in self.commits if c.key == key), None)

    def new_indices(self, digests: Sequence[str]) -> list[int]:
        """Positions in ``digests`` whose rows the table does not hold yet.

        A digest counts as often as commits recorded it: a job whose output
        holds one artifact twice (two batches with equal rows) exports it twice.
        """
        held = Counter(d for c in self.commits for d in c.artifacts)
        new = []
        for i, digest in enumerate(digests):
            if held[digest] > 0:
                held[digest] -= 1
            else:
                new.append(i)
        return new

    @property
    def artifacts_total(self) -> int:
        """How many artifacts Winnow's commits recorded so far."""
        return self.commits[-1].artifacts_total if self.commits else 0
