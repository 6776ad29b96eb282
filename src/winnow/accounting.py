"""Row accounting: every input row of a run ends somewhere, and we can say where.

For each input file, the rows of its batches' ranges (``read``) split into
rows the last stage passed on, rows a stage filtered out (per stage), rows
quarantined as bad records, blank JSONL lines (no record in them), and rows
of batches that did not finish (a failed, poisoned or interrupted batch). ``unaccounted`` is what is left over and must
be 0: a reader or stage that lost rows silently would show here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileRows:
    """Where the rows of one input file went, in one run."""

    read: int = 0
    passed: int = 0
    quarantined: int = 0
    blank: int = 0
    failed: int = 0
    filtered: Counter[str] = field(default_factory=Counter)

    @property
    def unaccounted(self) -> int:
        """Rows read but neither passed, filtered, quarantined, blank nor failed; 0 unless lost."""
        left = self.read - self.passed - self.quarantined - self.blank - self.failed
        return left - self.filtered.total()

    def add(self, other: FileRows) -> None:
        """Add another file's (or batch's) counts to these, stage by stage."""
        self.read += other.read
        self.passed += other.passed
        self.quarantined += other.quarantined
        self.blank += other.blank
        self.failed += other.failed
        self.filtered.update(other.filtered)

    def to_dict(self) -> dict[str, Any]:
        """The counts as written in a run's summary (JSON keys such as ``blank_lines``)."""
        return {
            "read": self.read,
            "passed": self.passed,
            "filtered": sum(self.filtered.values()),
            "filtered_by_stage": {k: v for k, v in self.filtered.items() if v},
            "quarantined": self.quarantined,
            "blank_lines": self.blank,
            "in_failed_batches": self.failed,
            "unaccounted": self.unaccounted,
        }


class Tally:
    """Row accounting of a run, per input file; batches are added as they end."""

    def __init__(self, stages: list[str]) -> None:
        self.stages = stages
        self.files: dict[str, FileRows] = {}
        # The reduce side of a grouping stage: its partitions' rows, counted as files are.
        self.after: Tally | None = None
        # A rejoin stage's segment: the input's rows again (``winnow.rejoin``).
        self.rejoin = False

    def add_batch(
        self, file: str, start: int, stop: int, rows: list[dict[str, Any] | None]
    ) -> None:
        """Account one batch from its per-stage row counts (None: the stage did not finish it).

        Each entry holds ``rows_in`` and ``rows_out``; the first stage's also
        ``source_rows`` (rows read, bad ones included), ``bad_records`` and
        ``blank_lines``.
        """
        t = self.files.setdefault(file, FileRows())
        t.read += stop - start
        first = rows[0] if rows else None
        if first is None:
            t.failed += stop - start
            return
        t.quarantined += int(first.get("bad_records") or 0)
        t.blank += int(first.get("blank_lines") or 0)
        entering = int(first.get("rows_in") or 0)
        for name, rec in zip(self.stages, rows, strict=True):
            if rec is None:
                t.failed += entering  # the rows that reached the stage that did not finish
                return
            rows_in, rows_out = int(rec.get("rows_in") or 0), int(rec.get("rows_out") or 0)
            # An input that differs from the previous output is left unaccounted (visible).
            t.filtered[name] += rows_in - rows_out
            entering = rows_out
        t.passed += entering

    def total(self) -> FileRows:
        """The counts of every file summed, through a grouping stage's reduce side if any.

        With a reduce side (``after``), the rows the map side passed on are
        what its partitions read: their rows passed, filtered (duplicates a
        reduce removed) and failed replace them, and rows that reached the map
        side but no finished partition count as in failed batches. With a
        rejoin stage later on, the input's rows are counted where it reads
        them again (every row in failed batches if the run ended before).
        """
        out = FileRows()
        for rows in self.files.values():
            out.add(rows)
        rejoin = self.after
        while rejoin is not None and not rejoin.rejoin:
            rejoin = rejoin.after
        if rejoin is not None:
            # The input is read again there: the segments before it carried derived
            # rows (signatures, edges), the rejoin's count is the run's.
            if rejoin.files:
                return rejoin.total()
            unread = out.read - out.quarantined - out.blank  # the run ended before it
            return FileRows(out.read, 0, out.quarantined, out.blank, unread)
        if self.after is not None:
            later = self.after.total()
            pending = out.passed - later.read  # rows no partition has read (yet)
            out.passed = later.passed
            out.failed += later.failed + max(pending, 0)
            out.quarantined += later.quarantined
            out.filtered.update(later.filtered)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The run's accounting for its summary: the ``total`` and each file's, by URL.

        With a grouping stage, each file's counts end at its map side (its
        ``passed`` rows went into partitions) and ``partitions`` holds each
        reduce partition's. With a rejoin stage, each file's counts are those
        of its last reading.
        """
        files, later, partitions = self.files, self.after, {}
        while later is not None:  # each grouping stage's partitions, by name
            if later.rejoin:  # the input's rows again: per file, as counted there
                files = later.files or files
            else:
                partitions.update({url: rows.to_dict() for url, rows in later.files.items()})
            later = later.after
        out = {
            "total": self.total().to_dict(),
            "files": {url: rows.to_dict() for url, rows in sorted(files.items())},
        }
        if self.after is not None:
            out["partitions"] = dict(sorted(partitions.items()))
        return out


def row_counts(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few counts of a checkpoint record that accounting needs."""
    if record is None:
        return None
    keys = ("rows_in", "rows_out", "source_rows", "bad_records", "blank_lines")
    return {k: record[k] for k in keys if k in record}
