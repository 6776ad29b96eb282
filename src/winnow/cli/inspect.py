"""``winnow inspect``: one job, batch, artifact, or the quarantined records."""

from __future__ import annotations

import click
from rich.markup import escape

from winnow.cli import console
from winnow.cli.options import echo_json, json_option, state_option
from winnow.storage.state import State
from winnow.tools import inspect as inspect_tool
from winnow.tools import quarantine as quarantine_tool

_out = console.out


@click.group()
def inspect() -> None:
    """Look at one job, batch or artifact."""


@inspect.command("job")
@click.option("--id", "job_id", required=True, help="Job id (see `winnow jobs`).")
@state_option
@click.option("--format", "fmt", type=click.Choice(["table", "markdown"]), default="table")
@json_option
def inspect_job(job_id: str, state: State, fmt: str, as_json: bool) -> None:
    """A job's run log: state before/after/delta, per-stage counts and timings, errors."""
    info = inspect_tool.inspect_job(state, job_id)
    if as_json:
        echo_json(info)
    elif fmt == "markdown":
        click.echo(inspect_tool.job_markdown(info))
    else:
        _out.print(inspect_tool.job_markdown(info), markup=False, highlight=False)


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
