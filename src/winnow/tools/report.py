"""``winnow report JOB --to report.html``: one self-contained HTML page about a run.

The same pictures as the notebook, as inline PNGs, so the file can be mailed
or attached to a ticket and opened anywhere. Everything on it is the job's
own: its stages in pipeline order, the batches it computed, and the batches
its output is made of (``explore.job_batches``), never another pipeline's.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from winnow.records import BatchStatus
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.fs import open_url
from winnow.storage.manifests import read_manifest
from winnow.storage.state import State
from winnow.tools import plots
from winnow.tools import report_page as page
from winnow.tools.explore import job_batches, job_quarantined
from winnow.tools.inspect import stage_order
from winnow.tools.report_tables import (
    delta_table,
    groupings_table,
    rows_table,
    stage_table,
    unfinished,
)

SECTIONS = (
    "summary",
    "computed-by",
    "failures",
    "stages",
    "state-delta",
    "rows",
    "latency",
    "throughput",
    "quarantine",
    "artifact-check",
)
QUARANTINE_SHOWN = 20


def build(state: State, job_id: str) -> str:
    """The report as an HTML string."""
    job = state.read_job(job_id)
    batches = job_batches(state, job_id)
    own = batches.filter(pc.equal(batches.column("job_id"), job_id))
    order = stage_order(job)
    parts = [
        f"<h1>Winnow run {page.esc(job_id)} {page.badge(job.get('status'))} "
        f"<small>pipeline {page.esc(job.get('pipeline'))}</small></h1>",
        page.section("summary", "Summary", _lead(job, batches) + _kv(job)),
        page.section(
            "computed-by", "Where this output came from", _computed_by(state, job, batches)
        ),
        page.section("failures", "Failures", _failures(job)),
        page.section("stages", "Per stage", stage_table(job, own)),
        *(
            [page.section("partitions", "Grouping stages: partitions", groupings_table(job))]
            if job.get("groupings")
            else []
        ),
        page.section("state-delta", "Checkpoints before / after this run", delta_table(job)),
        page.section("rows", "Rows kept, dropped and quarantined per stage", rows_table(job)),
        page.section(
            "latency",
            "Stage latency (batches this run computed)",
            _timed(own, job, lambda: plots.stage_latency(own, order)),
        ),
        page.section(
            "throughput",
            "Throughput over time (batches this run computed)",
            _timed(own, job, lambda: plots.throughput(own, order)),
        ),
        page.section("quarantine", "Quarantined records", _quarantine(state, job)),
        page.section(
            "artifact-check", "One artifact verified by hand", _artifact_check(state, job)
        ),
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Winnow run {page.esc(job_id)}</title><style>{page.STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def write(state: State, job_id: str, to: str) -> str:
    """Write the report of ``job_id`` to ``to`` (any fsspec URL); return ``to``."""
    text = build(state, job_id)
    with open_url(to, "w", **state.storage_options) as fh:
        fh.write(text)
    return to


def _lead(job: dict[str, Any], batches: pa.Table) -> str:
    """One sentence on how the run went, above the numbers."""
    counts = (job.get("counts") or {}).values()
    ran = sum(c["run"] for c in counts)
    skipped = sum(c["skipped"] for c in counts)
    poison = job.get("poison_batches") or []
    error = job.get("error") or {}
    if error:
        text = f"The job failed: {error.get('type')}: {error.get('message')}"
        return f"<p class='lead bad'>{page.esc(text)}</p>"
    if poison:
        lost = ((job.get("accounting") or {}).get("total") or {}).get("in_failed_batches")
        rows = f" ({lost:,} input rows are not in the output)" if lost else ""
        return (
            f"<p class='lead bad'>{len(poison)} batch(es) failed for good after their retries"
            f"{page.esc(rows)}; see <a href='#failures'>Failures</a>. "
            "<code>winnow retry --failed</code> re-runs just those.</p>"
        )
    if "counts" not in job:
        return f"<p class='lead note'>{page.esc(unfinished(job))}</p>"
    if not job.get("batches"):
        return "<p class='lead note'>This run had no input rows: nothing was read or written.</p>"
    if ran == 0 and skipped:
        others = sorted({j for j in batches.column("job_id").to_pylist() if j})
        return (
            f"<p class='lead note'>Every batch was already committed: this run computed "
            f"nothing ({skipped:,} stage batches skipped in {job.get('wall_s')} s). Its "
            f"output was computed by {page.esc(', '.join(others) or 'earlier jobs')}; see "
            "<a href='#computed-by'>where this output came from</a>.</p>"
        )
    return (
        f"<p class='lead'>Computed {ran:,} stage batches and skipped {skipped:,} already "
        "committed ones.</p>"
    )


def _kv(job: dict[str, Any]) -> str:
    total = (job.get("accounting") or {}).get("total") or {}
    rows: list[list[Any]] = [
        ["pipeline", job.get("pipeline")],
        ["profile", (job.get("profile") or {}).get("name")],
        ["started", job.get("created_at")],
        ["finished", job.get("finished_at")],
        ["wall time (s)", job.get("wall_s")],
        ["rows in", job.get("rows_in")],
        ["rows out", job.get("rows_out")],
        ["quarantined (bad) records", job.get("bad_records")],
        ["rows in failed batches", total.get("in_failed_batches")],
        ["throughput (rows/s)", job.get("throughput_rows_s")],
        ["stage batches skipped", _percent(job.get("skipped_fraction"))],
        ["output manifest", job.get("manifest") or "none"],
    ]
    bad = {(i, 1) for i, r in enumerate(rows) if r[0] == "rows in failed batches" and r[1]}
    return page.table(None, rows, bad)


def _percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{100 * fraction:.0f}%"


def _computed_by(state: State, job: dict[str, Any], batches: pa.Table) -> str:
    """Which jobs computed the committed batches this job's output is made of."""
    done = [r for r in batches.to_pylist() if r["status"] == BatchStatus.SUCCEEDED]
    if not done:
        return "<p class='muted'>No committed batch belongs to this run's output.</p>"
    per_job: dict[str, Counter[str]] = {}
    for r in done:
        per_job.setdefault(r["job_id"] or "?", Counter())[r["stage"]] += 1
    order = stage_order(job)
    rows = []
    for other, stages in sorted(per_job.items()):
        try:
            record = state.read_job(other) if other != job["job_id"] else job
            status, finished = record.get("status"), record.get("finished_at")
        except Exception:  # an old job record may be gone (gc) or damaged
            status, finished = "record unreadable", ""
        work = ", ".join(f"{s} {stages[s]:,}" for s in order if stages[s])
        who = f"{other} (this run)" if other == job["job_id"] else other
        rows.append([who, status, finished, work])
    hint = (
        "<p class='muted'>Batches this run skipped were computed by the earlier job(s) above; "
        "<code>winnow report JOB --to FILE</code> shows how that run went.</p>"
        if set(per_job) - {job["job_id"]}
        else ""
    )
    return page.table(["job", "status", "finished", "committed batches per stage"], rows) + hint


def _failures(job: dict[str, Any]) -> str:
    errors = job.get("errors") or {}
    poison = job.get("poison_batches") or []
    integrity = job.get("integrity_failures") or []
    error = job.get("error") or {}
    if not (errors or poison or integrity or error):
        return "<p class='ok'>No failures: no batch failed, none was retried.</p>"
    out = []
    if error:
        out.append(
            f"<p class='lead bad'>{page.esc(error.get('type'))}: {page.esc(error.get('message'))}</p>"
        )
    if poison:
        rows = []
        for p in poison:
            src = p.get("source") or {}
            where = f"{src.get('file')} rows {src.get('start')}-{src.get('stop')}"
            rows.append([p["stage"], p["key"][:16], where, p.get("attempts"), p.get("message")])
        out.append("<h3 class='bad'>Poison batches (failed after every retry)</h3>")
        out.append(page.table(["stage", "batch key", "input", "attempts", "last error"], rows))
    if integrity:
        out.append("<h3 class='bad'>Integrity failures</h3>")
        rows = [[i.get("stage"), str(i.get("key"))[:16], i.get("message")] for i in integrity]
        out.append(page.table(["stage", "batch key", "what failed"], rows))
    for kind, group in errors.items():
        example = group.get("example") or {}
        stages = ", ".join(group.get("stages") or [])
        out.append(
            f"<h3>{page.esc(kind)}: {group['count']} failed attempt(s) in {page.esc(stages)}</h3>"
            f"<p>{page.esc(example.get('message', ''))}</p>"
            f"<details><summary>traceback</summary><pre>{page.esc(example.get('traceback') or '')}"
            "</pre></details>"
        )
    return "".join(out)


def _timed(own: pa.Table, job: dict[str, Any], draw: Any) -> str:
    """A timing picture of the batches this run computed, or why there is none."""
    committed = sum(1 for s in own.column("status").to_pylist() if s == BatchStatus.SUCCEEDED)
    failed = own.num_rows - committed
    note = (
        f"<p class='bad'>{failed} failed batch attempt(s) are not drawn: they did no work.</p>"
        if failed
        else ""
    )
    if committed:
        return page.image(draw()) + note
    if "counts" not in job:
        return f"<p class='muted'>{page.esc(unfinished(job))}</p>"
    if not job.get("batches"):
        return "<p class='muted'>This run had no input batches.</p>"
    if failed:
        return note
    return (
        "<p class='muted'>This run computed no batch: every one was already committed. "
        "The jobs under <a href='#computed-by'>where this output came from</a> did the "
        "work; their reports have its timings.</p>"
    )


def _quarantine(state: State, job: dict[str, Any]) -> str:
    table = job_quarantined(state, job["job_id"], limit=QUARANTINE_SHOWN)
    if table.num_rows == 0:
        return "<p class='ok'>No quarantined records in this run's input.</p>"
    total = job.get("bad_records") or table.num_rows
    shown = f"; the first {table.num_rows}" if total > table.num_rows else ""
    lead = (
        f"<p>{total:,} bad record(s) in this run's input were set aside{shown}. "
        "All of them: <code>winnow.tools.explore.job_quarantined(state, job_id)</code>.</p>"
    )
    records = table.to_pylist()
    files = [str(r["file"]) for r in records]
    # by character, then cut at the last "/": commonpath would fold a URL's "s3://"
    prefix = os.path.commonprefix(files)  # noqa: RUF071
    folder = prefix[: prefix.rfind("/") + 1]
    if folder:
        lead += f"<p class='muted'>Files under <code>{page.esc(folder)}</code>.</p>"
    names = [f[len(folder) :] for f in files]
    rows = [
        [name, r["row"], r["error"], str(r["raw"])[:120]]
        for name, r in zip(names, records, strict=True)
    ]
    return lead + page.table(["file", "row", "error", "raw (first 120 characters)"], rows)


def _artifact_check(state: State, job: dict[str, Any]) -> str:
    if not job.get("manifest"):
        return "<p class='muted'>No output manifest: the job ended before writing one.</p>"
    try:
        manifest = read_manifest(job["manifest"], state.storage_options)
    except FileNotFoundError:
        return f"<p class='bad'>The output manifest {page.esc(job['manifest'])} is gone.</p>"
    entries = [e for e in manifest["batches"] if e.get("artifact")]
    if not entries:
        return "<p class='muted'>The output has no artifacts: no batch reached the last stage.</p>"
    art = entries[0]["artifact"]
    data = ArtifactStore.for_uri(art["uri"], state.storage_options).read_bytes(art["uri"])
    digest = hashlib.sha256(data).hexdigest()
    verdict = "matches" if digest == art["digest"] else "DOES NOT match"
    css = "ok" if digest == art["digest"] else "bad"
    return (
        f"<p><code>{page.esc(art['uri'])}</code>: {len(data):,} bytes; SHA-256 recomputed "
        f"<code>{digest}</code> <span class='{css}'>{verdict}</span> the checkpoint's "
        f"<code>{page.esc(art['digest'])}</code>.</p>"
    )
