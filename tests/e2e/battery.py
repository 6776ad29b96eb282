"""The trust battery's tools: seeded damage to a state, and a tally.

Used by ``tests/e2e/test_trust_battery.py``, which kills live commands with
``tests/processes.py``. Everything here acts on files the way an accident
would (a flipped byte, a torn line), never through Winnow's own code, so the
battery proves what Winnow makes of it.
``WINNOW_BATTERY_SEED`` (default 7) replays a campaign's draws: which artifacts and
lines are damaged and how, which commands are killed and after what delays. What a
kill interrupts still depends on the machine's timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

SEED = int(os.environ.get("WINNOW_BATTERY_SEED", "7"))
NEWLINE = b"\n"

# Lines that are not checkpoint records, each in its own way.
GARBAGE = [
    b'{"stage": "pace", "key": \x00\xff half a record',
    b"not json at all",
    b"[1, 2, 3]",
    b'{"key": 5, "status": "DONE", "ts": 1}',
    b"\xff\xfe\xfd\xfc",
]
# Journal lines that are not JSON (the journal takes any JSON object for an event).
JOURNAL_GARBAGE = [
    b'{"ts": "2026-01-01", "type": \x00\xff half an event',
    b"not json at all",
    b"\xff\xfe\xfd\xfc",
]


# -- the tally ------------------------------------------------------------------
@dataclass
class Tally:
    """Per kind of damage or kill: how many were tried and how many Winnow withstood."""

    tried: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    rows_unaccounted: int = 0

    def attempt(self, kind: str, held: bool) -> None:
        self.tried[kind] = self.tried.get(kind, 0) + 1
        self.held[kind] = self.held.get(kind, 0) + int(held)

    def total(self, prefix: str) -> tuple[int, int]:
        """(held, tried) over every kind that starts with ``prefix``."""
        kinds = [k for k in self.tried if k.startswith(prefix)]
        return sum(self.held[k] for k in kinds), sum(self.tried[k] for k in kinds)

    def as_dict(self) -> dict[str, Any]:
        corrupt, kills = self.total("corrupt"), self.total("kill")
        return {
            "seed": SEED,
            "kinds": {
                k: {"tried": self.tried[k], "held": self.held[k]} for k in sorted(self.tried)
            },
            "corruptions": {"detected": corrupt[0], "tried": corrupt[1]},
            "kills": {"survived": kills[0], "tried": kills[1]},
            "rows_unaccounted": self.rows_unaccounted,
        }

    def table(self) -> str:
        rows = [("kind", "held", "tried")]
        rows += [(k, str(self.held[k]), str(self.tried[k])) for k in sorted(self.tried)]
        corrupt, kills = self.total("corrupt"), self.total("kill")
        rows += [
            ("corruptions detected / tried", str(corrupt[0]), str(corrupt[1])),
            ("kills survived / tried", str(kills[0]), str(kills[1])),
            ("rows unaccounted", str(self.rows_unaccounted), ""),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b:>5}  {c:>5}" for a, b, c in rows]
        return "\n".join([f"trust battery, seed {SEED}", *lines])


# -- reading the state as files ----------------------------------------------------
@dataclass(frozen=True)
class Line:
    """One non-blank line of a checkpoint segment (``record`` None if it is not one)."""

    stage: str
    path: Path
    number: int
    record: dict[str, Any] | None


def segment_lines(state: Path) -> list[Line]:
    out = []
    for path in sorted(state.glob("stages/*/segments/*.jsonl")):
        stage = path.parent.parent.name
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
            record = (
                value if isinstance(value, dict) and isinstance(value.get("key"), str) else None
            )
            out.append(Line(stage, path, number, record))
    return out


def latest(state: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest record of every (stage, key)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for line in segment_lines(state):
        rec = line.record
        if rec is None:
            continue
        prev = found.get((line.stage, rec["key"]))
        if prev is None or rec["ts"] >= prev["ts"]:
            found[(line.stage, rec["key"])] = rec
    return found


def committed_by(state: Path, job_id: str) -> set[tuple[str, str]]:
    """(stage, key) of every SUCCEEDED record ``job_id`` wrote."""
    return {
        (line.stage, line.record["key"])
        for line in segment_lines(state)
        if line.record and line.record["status"] == "SUCCEEDED" and line.record["job_id"] == job_id
    }


def newest_job(state: Path) -> str:
    """The id of the newest SUCCEEDED job (one that has an output to export)."""
    jobs = [json.loads(p.read_bytes()) for p in (state / "jobs").glob("*.json")]
    done = [j for j in jobs if j.get("status") == "SUCCEEDED" and j.get("manifest")]
    return str(max(done, key=lambda j: j["created_at"])["job_id"])


@dataclass(frozen=True)
class Target:
    """An artifact a committed checkpoint names: its output, or its quarantine."""

    stage: str
    key: str
    which: str  # "output" | "quarantine"
    uri: str


def artifact_targets(state: Path) -> list[Target]:
    out = []
    for (stage, key), rec in sorted(latest(state).items()):
        if rec["status"] != "SUCCEEDED":
            continue
        out.append(Target(stage, key, "output", rec["artifact"]["uri"]))
        quarantine = (rec.get("quarantine") or {}).get("artifact")
        if quarantine:
            out.append(Target(stage, key, "quarantine", quarantine["uri"]))
    return out


# -- damage ----------------------------------------------------------------------
def corrupt_file(path: Path, mode: str, rng: Random) -> None:
    """Flip one byte of ``path``, cut it short, or delete it."""
    data = path.read_bytes()
    if mode == "flip":
        at = rng.randrange(len(data))
        path.write_bytes(data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :])
    elif mode == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))])
    else:
        path.unlink()


def insert_garbage(segment: Path, rng: Random) -> int:
    """Put a garbage line between two records of ``segment``; return its line number."""
    lines = segment.read_bytes().splitlines(keepends=True)
    at = rng.randrange(1, len(lines))
    lines.insert(at, rng.choice(GARBAGE) + b"\n")
    segment.write_bytes(b"".join(lines))
    return at + 1


def overwrite_line(segment: Path, number: int, rng: Random) -> None:
    """Replace record line ``number`` (1-based) of ``segment`` with garbage."""
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[number - 1] = rng.choice(GARBAGE) + b"\n"
    segment.write_bytes(b"".join(lines))


def damage_job_record(path: Path, rng: Random) -> str:
    """Cut a job record short, or make it garbage or a JSON value that is no record."""
    mode = rng.choice(["truncate", "garbage", "array"])
    data = path.read_bytes()
    damaged = {
        "truncate": data[: rng.randrange(1, len(data) - 1)],
        "garbage": b"\x00\xff" + data[: len(data) // 3],
        "array": b"[" + data + b"]",
    }[mode]
    path.write_bytes(damaged)
    return mode


def append_to_journal(state: Path, data: bytes) -> str:
    """Append ``data`` to the newest journal day; return ``file:line`` of its first line."""
    day = max(state.glob("events/*.jsonl"))
    before = day.read_bytes()
    if before and not before.endswith(b"\n"):
        raise AssertionError(f"{day} already ends in a torn line")
    day.write_bytes(before + data)
    return f"{day}:{before.count(NEWLINE) + 1}"


def plant_unreferenced(artifacts: Path, count: int, rng: Random) -> set[Path]:
    """``count`` content-addressed files no checkpoint names, and stale temporaries,
    all two hours old (what crashed runs and deleted states leave behind)."""
    planted = set()
    old = time.time() - 7200
    for i in range(count):
        data = rng.randbytes(48) + str(i).encode()
        digest = hashlib.sha256(data).hexdigest()
        if i % 50 == 0:
            path = artifacts / "tmp" / f"{digest}.{rng.randbytes(16).hex()}.partial"
        else:
            path = artifacts / "sha256" / digest[:2] / f"{digest}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (old, old))
        planted.add(path)
    return planted
