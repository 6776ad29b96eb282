"""Real runs of a tiny pipeline (tests/pipelines/flaky.py) on the local executor, whose
OpenLineage events go to OpenLineage's file transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

import winnow
from tests.lineage.openlineage_schema import RUN_EVENT
from winnow.profile import LineageSettings, Profile
from winnow.result import RunResult

ROOT = Path(__file__).resolve().parents[2]
FLAKY = str(ROOT / "tests" / "pipelines" / "flaky.py")
ROWS = 50


def write_input(directory: Path, rows: int = ROWS) -> str:
    path = directory / "in.jsonl"
    if path.exists():
        return str(path)  # unchanged: a rerun skips its batches
    path.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(rows)))
    return str(path)


def file_transport(events: Path) -> dict[str, Any]:
    """OpenLineage's file transport, every event appended to one JSON-lines file."""
    return {"type": "file", "log_file_path": str(events), "append": True}


def run_flaky(
    where: Path,
    lineage: LineageSettings | None = None,
    sets: tuple[str, ...] = (),
    rows: int = ROWS,
) -> RunResult:
    """``flaky`` (a pass-through stage, then an uppercasing one) over ``rows`` rows."""
    profile = Profile(
        batch_rows=20, max_attempts=1, retry_backoff_s=0, lineage=lineage or LineageSettings()
    )
    return winnow.run(
        FLAKY,
        profile=profile,
        inputs=[write_input(where, rows)],
        state=str(where / "state"),
        output=str(where / "out"),
        sets=list(sets),
        executor="local",
        progress=False,
    )


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events a file transport wrote, each checked against the OpenLineage schema."""
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    validator = jsonschema.Draft202012Validator(
        RUN_EVENT, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for event in events:
        errors = sorted(validator.iter_errors(event), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    return events
