"""What the previous run of a pipeline recorded, and what changed since.

These are the causes ``winnow plan`` names: code, parameter, version, input
file, batch size, schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from winnow import sources


@dataclass
class History:
    """What the previous run of a pipeline recorded, to explain what changed since.

    Args:
        stages: per stage name, its ``fingerprint_parts()`` and ``fingerprint``.
        files: per input URL, the file identity it had.
        batch_rows: the batch size the batches were cut with.
        reader: the reader fingerprint (schema, bad-record policy) they were read with.
    """

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    batch_rows: int | None = None
    reader: str | None = None


def stage_change(
    name: str, prev: dict[str, Any] | None, parts: dict[str, Any], fp: str
) -> str | None:
    """Why stage ``name``'s fingerprint differs from the previous run's, or None if it does not."""
    if prev is None or prev.get("fingerprint") == fp:
        return None
    if "params" not in prev:  # recorded before fingerprints covered code
        return f"{name}: fingerprint changed (checkpoints from before code-aware fingerprints)"
    causes = []
    if prev.get("version") != parts["version"]:
        causes.append(f"{name} version {prev.get('version')} -> {parts['version']}")
    old, new = prev.get("params") or {}, parts["params"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            causes.append(f"{name} parameter {key} {_show(old.get(key))} -> {_show(new.get(key))}")
    if prev.get("code") != parts["code"]:
        causes.append(f"code of stage {name} changed")
    return "; ".join(causes) or f"{name}: fingerprint changed"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def source_change(sb: sources.SourceBatch, history: History, batch_rows: int, reader: str) -> str:
    """Why a source batch is new to the first stage."""
    old = history.files.get(sb.file.url)
    if old is not None and old != sb.file.identity:
        return "input file changed"
    if history.batch_rows is not None and history.batch_rows != batch_rows:
        return f"batch_rows changed {history.batch_rows} -> {batch_rows} (batch boundaries moved)"
    if history.reader is not None and history.reader != reader:
        return "input schema or on_bad_record changed"
    if history.files and old is None:
        return "new input file"
    return "new batch"
