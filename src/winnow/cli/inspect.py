"""``winnow inspect``: one job, batch, artifact, or the quarantined records."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from winnow.cli import console
from winnow.cli.options import echo_json, json_option, state_option
from winnow.records import JobStatus
from winnow.storage.state import State
from winnow.tools import inspect as inspect_tool
from winnow.tools import quarantine as quarantine_tool
from winnow.tools import removed as removed_tool

_out = console.out


@click.group()
def inspect() -> None:
    """Look at one job, batch or artifact."""


@inspect.command("job")
@click.argument("job", required=False)
@click.option("--id", "job_id", default=None, help="The job id (same as JOB; see `winnow jobs`).")
@state_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown"]),
    default="table",
    show_default=True,
    help="Tables for the terminal, or the run log as Markdown (for a ticket or a PR).",
)
@json_option
def inspect_job(job: str | None, job_id: str | None, state: State, fmt: str, as_json: bool) -> None:
    """JOB's run log: state before/after/delta, per-stage counts and timings, errors."""
    job = job or job_id
    if job is None or (job_id is not None and job != job_id):
        raise click.UsageError("name the job once: `winnow inspect job JOB` (or --id JOB)")
    info = inspect_tool.inspect_job(state, job)
    if as_json:
        echo_json(info)
    elif fmt == "markdown":
        click.echo(inspect_tool.job_markdown(info))
    else:
        _print_job(info)


def _print_job(info: dict[str, Any]) -> None:
    """The run log as terminal tables, stages in pipeline order."""
    job = info["job"]
    status = job.get("status")
    style = "green" if status == JobStatus.SUCCEEDED else "red"
    _out.print(
        f"[bold]{escape(job['job_id'])}[/bold] ({escape(str(job.get('pipeline')))}, profile "
        f"{escape(str((job.get('profile') or {}).get('name')))}): [{style}]{status}[/{style}]"
    )
    _out.print(
        f"started {job.get('created_at')}, finished {job.get('finished_at')}, "
        f"wall {job.get('wall_s')} s; rows in {job.get('rows_in')}, rows out "
        f"{job.get('rows_out')}, bad records {job.get('bad_records')}",
        highlight=False,
    )
    _out.print(f"output manifest: {escape(str(job.get('manifest')))}", highlight=False)
    ray = info.get("ray")
    if ray:
        status = f", Ray status {ray['status']}" if ray.get("status") else ""
        _out.print(
            f"Ray job: {ray.get('submission_id')} at {ray.get('dashboard_url')}{status}",
            highlight=False,
        )
    order = inspect_tool.stage_order(job)
    counts, timings = job.get("counts") or {}, info["timings"]
    table = Table(title="per stage")
    for col in ("stage", "run", "skipped", "retried", "failed", "rows in", "rows out"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    table.add_column("p50 s", justify="right")
    table.add_column("p95 s", justify="right")
    for stage in order:
        c, t = counts.get(stage) or {}, timings.get(stage) or {}
        table.add_row(
            stage,
            *(str(c.get(k, "")) for k in ("run", "skipped", "retried", "failed")),
            *(f"{c[k]:,}" if k in c else "" for k in ("rows_in", "rows_out")),
            str(t.get("p50_s", "")),
            str(t.get("p95_s", "")),
        )
    _out.print(table)
    states = Table(title="checkpoints by status: before, after, delta")
    for col in ("stage", "before", "after", "delta"):
        states.add_column(col)
    before, after, delta = (job.get(k) or {} for k in ("state_before", "state_after", "delta"))
    for stage in order:
        states.add_row(
            stage,
            inspect_tool.counts_text(before.get(stage)),
            inspect_tool.counts_text(after.get(stage)),
            inspect_tool.counts_text(delta.get(stage), signed=True),
        )
    _out.print(states)
    for kind, group in (job.get("errors") or {}).items():
        example = group.get("example") or {}
        _out.print(
            f"[red]{escape(kind)}[/red] x{group['count']} in {', '.join(group.get('stages', []))}: "
            f"{escape(str(example.get('message', ''))[:300])}",
            highlight=False,
        )
    for p in job.get("poison_batches") or []:
        src = p.get("source") or {}
        _out.print(
            f"[red]poison batch[/red] {p['stage']} {p['key'][:16]} after {p['attempts']} "
            f"attempts: {escape(str(src.get('file')))} rows {src.get('start')}-{src.get('stop')}",
            highlight=False,
        )


@inspect.command("batch")
@click.argument("key")
@state_option
@json_option
def inspect_batch(key: str, state: State, as_json: bool) -> None:
    """One batch's checkpoints per stage and its history across attempts."""
    info = inspect_tool.inspect_batch(state, key)
    if as_json:
        echo_json(info)
        return
    _out.print(f"batch {info['batch']}")
    for rec in info["stages"]:
        src = rec.get("source") or {}
        err = rec.get("error") or {}
        _out.print(
            f"  {rec['stage']}: {rec['status']} attempt {rec.get('attempt')} job {rec.get('job_id')}"
            f" {src.get('file')} rows {src.get('start')}-{src.get('stop')}"
            + (f" — {err.get('type')}: {escape(str(err.get('message'))[:200])}" if err else "")
        )
    for e in info["history"]:
        _out.print(
            f"  {e['ts']} {e['type']} {e.get('stage', '')} attempt {e.get('attempt', '')} "
            f"{e.get('error', '')}"
        )


@inspect.command("artifact")
@click.argument("digest")
@state_option
@json_option
def inspect_artifact(digest: str, state: State, as_json: bool) -> None:
    """An artifact's lineage: source file and rows, stage chain, checkpoint and job."""
    info = inspect_tool.inspect_artifact(state, digest)
    if as_json:
        echo_json(info)
        return
    art = info["artifact"]
    _out.print(
        f"{art['uri']}\n  {art['bytes']:,} bytes, {art['records']:,} records, {art['format']}"
    )
    for use in info["checkpoints"]:
        src = use.get("source") or {}
        _out.print(
            f"  {use['stage']} {use['status']} job {use['job_id']} attempt {use['attempt']}: "
            f"{src.get('file')} rows {src.get('start')}-{src.get('stop')}"
        )
        _out.print(
            "    " + " -> ".join(f"{c['stage']}:{str(c['digest'])[:12]}" for c in use["chain"])
        )


@inspect.command("quarantine")
@state_option
@click.option("--limit", default=20, show_default=True, help="How many records to show.")
@json_option
def inspect_quarantine(state: State, limit: int, as_json: bool) -> None:
    """Quarantined bad records: file, row, error and the raw line."""
    table = quarantine_tool.quarantined(state, limit=limit)
    rows = table.to_pylist()
    if as_json:
        echo_json({"records": rows})
        return
    if not rows:
        _out.print("no quarantined records")
    for r in rows:
        _out.print(
            f"{r['file']}:{r['row']}: {escape(str(r['error']))}\n    {escape(str(r['raw'])[:200])}"
        )


@inspect.command("removed")
@state_option
@click.option("--job", "job_id", default=None, help="Job id (default: the newest with one).")
@click.option("--limit", default=20, show_default=True, help="How many rows to show.")
@json_option
def inspect_removed(state: State, job_id: str | None, limit: int, as_json: bool) -> None:
    """Rows a grouping stage removed (exact_dedup: each duplicate and the id it duplicates)."""
    rows = removed_tool.removed(state, job_id, limit=limit).to_pylist()
    if as_json:
        echo_json({"records": rows})
        return
    if not rows:
        _out.print("no removed rows")
    for r in rows:
        _out.print(escape(", ".join(f"{k}={v}" for k, v in r.items())))
