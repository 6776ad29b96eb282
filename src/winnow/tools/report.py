"""``winnow report JOB --to report.html``: one self-contained HTML page about a run.

The same pictures as the notebook, as inline PNGs, so the file can be mailed
or attached to a ticket and opened anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from winnow.storage.artifacts import ArtifactStore
from winnow.storage.fs import open_url
from winnow.storage.state import State
from winnow.tools import plots
from winnow.tools.explore import batch_records
from winnow.tools.inspect import inspect_job
from winnow.tools.quarantine import quarantined

SECTIONS = (
    "summary",
    "stages",
    "state-delta",
    "rows",
    "latency",
    "throughput",
    "errors",
    "quarantine",
    "artifact-check",
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em}
th{background:#f2f2f2}code,pre{background:#f6f6f6;padding:.1em .3em}pre{overflow-x:auto}
.ok{color:#1a7f37}.bad{color:#c62828}
"""


def build(state: State, job_id: str) -> str:
    """The report as an HTML string."""
    info = inspect_job(state, job_id)
    job = info["job"]
    records = batch_records(state, job_id)
    parts = [
        f"<h1>Winnow run {_e(job_id)}</h1>",
        _section("summary", "Summary", _kv(job)),
        _section("stages", "Per stage", _stage_table(job, info["timings"])),
        _section("state-delta", "State before / after / delta", _delta_table(job)),
        _section(
            "rows", "Rows kept and dropped per stage", _img(plots.rows_per_stage(job), "rows")
        ),
        _section("latency", "Stage latency", _img(plots.stage_latency(records), "latency")),
        _section(
            "throughput", "Throughput over time", _img(plots.throughput(records), "throughput")
        ),
        _section("errors", "Errors by type", _errors(job)),
        _section("quarantine", "Quarantined records", _quarantine(state)),
        _section("artifact-check", "One artifact verified by hand", _artifact_check(state, job)),
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Winnow run {_e(job_id)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def write(state: State, job_id: str, to: str) -> str:
    page = build(state, job_id)
    with open_url(to, "w", **state.storage_options) as fh:
        fh.write(page)
    return to


def _e(value: Any) -> str:
    return html.escape(str(value))


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{_e(title)}</h2>{body}</section>"


def _img(fig: Any, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode()
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _kv(job: dict[str, Any]) -> str:
    keys = ("pipeline", "status", "created_at", "finished_at", "wall_s", "rows_in", "rows_out")
    rows = [[k, job.get(k)] for k in keys]
    rows += [
        ["profile", (job.get("profile") or {}).get("name")],
        ["throughput (rows/s)", job.get("throughput_rows_s")],
        ["bad records", job.get("bad_records")],
        ["output manifest", job.get("manifest")],
    ]
    return _table(["field", "value"], rows)


def _stage_table(job: dict[str, Any], timings: dict[str, Any]) -> str:
    rows = []
    for stage, c in (job.get("counts") or {}).items():
        t = timings.get(stage, {})
        rows.append(
            [
                stage,
                c["run"],
                c["skipped"],
                c["retried"],
                c["failed"],
                c["rows_in"],
                c["rows_out"],
                t.get("p50_s", ""),
                t.get("p95_s", ""),
            ]
        )
    header = [
        "stage",
        "run",
        "skipped",
        "retried",
        "failed",
        "rows in",
        "rows out",
        "p50 s",
        "p95 s",
    ]
    return _table(header, rows)


def _delta_table(job: dict[str, Any]) -> str:
    before, after, delta = (job.get(k) or {} for k in ("state_before", "state_after", "delta"))
    rows = [
        [s, before.get(s, {}), after.get(s, {}), delta.get(s, {})]
        for s in sorted(set(before) | set(after))
    ]
    return _table(["stage", "before", "after", "delta"], rows)


def _errors(job: dict[str, Any]) -> str:
    errors = job.get("errors") or {}
    if not errors:
        return "<p class='ok'>No errors.</p>"
    out = []
    for kind, group in errors.items():
        example = group.get("example") or {}
        out.append(
            f"<h3>{_e(kind)} ({group['count']}x)</h3><p>{_e(example.get('message', ''))}</p>"
            f"<pre>{_e(example.get('traceback') or '')}</pre>"
        )
    return "".join(out)


def _quarantine(state: State) -> str:
    table = quarantined(state, limit=20)
    if table.num_rows == 0:
        return "<p class='ok'>No quarantined records.</p>"
    rows = [[r["file"], r["row"], r["error"], str(r["raw"])[:120]] for r in table.to_pylist()]
    return _table(["file", "row", "error", "raw"], rows)


def _artifact_check(state: State, job: dict[str, Any]) -> str:
    import json

    from winnow.storage.fs import resolve

    if not job.get("manifest"):
        return "<p>No output manifest.</p>"
    fs, path = resolve(job["manifest"], state.storage_options)
    entries = [e for e in json.loads(fs.cat_file(path))["batches"] if e.get("artifact")]
    if not entries:
        return "<p>No artifacts.</p>"
    art = entries[0]["artifact"]
    data = ArtifactStore.for_uri(art["uri"], state.storage_options).read_bytes(art["uri"])
    digest = hashlib.sha256(data).hexdigest()
    verdict = "matches" if digest == art["digest"] else "DOES NOT match"
    css = "ok" if digest == art["digest"] else "bad"
    return (
        f"<p><code>{_e(art['uri'])}</code>: {len(data):,} bytes; SHA-256 recomputed "
        f"<code>{digest}</code> <span class='{css}'>{verdict}</span> the checkpoint's "
        f"<code>{_e(art['digest'])}</code>.</p>"
    )
