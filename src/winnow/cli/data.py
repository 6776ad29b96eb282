"""CLI commands for the tools around a run: status, verify, gc, export, lock, report."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from winnow import jobs
from winnow.cli import console
from winnow.cli.options import echo_json, json_option, state_option
from winnow.errors import UsageError
from winnow.storage.state import State
from winnow.tools import export as export_tool
from winnow.tools import gc as gc_tool
from winnow.tools import status as status_tool
from winnow.tools import verify as verify_tool

_out = console.out


@click.command()
@state_option
@click.option("--full", is_flag=True, help="Re-hash and decode every artifact (default: size).")
@click.option(
    "--repair",
    is_flag=True,
    help="Rewrite damaged checkpoint segments without their bad lines and set damaged job "
    "records aside, after a backup under <state>/backups/.",
)
@json_option
def verify(state: State, full: bool, repair: bool, as_json: bool) -> None:
    """Re-check every artifact, quarantine and manifest the state references, and the state.

    A bad artifact is marked FAILED so the next run recomputes it. Exit 1 if
    anything was found.
    """
    result = verify_tool.verify_state(state, full=full, repair=repair)
    found = result["mismatches"] or result["manifest_problems"] or result["damage"]
    if as_json:
        echo_json(result)
    else:
        _print_verify(result, repair)
    if found:
        sys.exit(1)


def _print_verify(result: dict[str, Any], repair: bool) -> None:
    for p in result["mismatches"]:
        _out.print(
            f"[red]MISMATCH[/red] {p['stage']} {p['key'][:16]}… {p['artifact']}: "
            f"{escape(p['problem'])}"
        )
    for p in result["manifest_problems"]:
        batch = f" batch {str(p['batch'])[:16]}…" if p.get("batch") else ""
        _out.print(
            f"[red]MANIFEST[/red] job {p['job_id']} {escape(p['manifest'])}{batch}: "
            f"{escape(p['problem'])} — fix: {p['fix']}"
        )
    for d in result["damage"]:
        _out.print(f"[yellow]DAMAGED[/yellow] {escape(d)}", soft_wrap=True)
    for r in result["repairs"]:
        _out.print(
            f"[green]REPAIRED[/green] {escape(r['file'])}: {r['action']}; "
            f"original kept as {escape(r['backup'])}",
            soft_wrap=True,
        )
    mismatches = result["mismatches"]
    _out.print(
        f"checked {result['checked']} artifacts ({'full' if result['full'] else 'size'}) and "
        f"{result['manifests']} manifests: {len(mismatches)} mismatches, "
        f"{len(result['manifest_problems'])} manifest problems, "
        f"{len(result['damage'])} damaged state lines/files"
        + (" — mismatches marked FAILED; the next run recomputes them" if mismatches else "")
    )
    if result["damage"] and not repair:
        _out.print(
            "damaged lines are skipped and their batches recomputed by the next run; "
            "`winnow verify --repair` rewrites the damaged files without them (originals "
            "backed up under <state>/backups/)"
        )


@click.command()
@state_option
@json_option
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
def status(state: State, as_json: bool, watch: bool, interval: float) -> None:
    """Jobs, queue depth, per-stage counts, throughput, failures, quarantined records."""
    st = state
    with contextlib.suppress(OSError):  # a read-only state still shows the jobs
        jobs.reconcile_lost_jobs(st)  # a job whose driver is gone is not RUNNING
    if as_json and not watch:
        echo_json(status_tool.status(st))
        return
    if not watch:
        _out.print(_status_view(status_tool.status(st)), crop=False)  # a damaged file's path
        return
    with Live(_status_view(status_tool.status(st)), console=_out, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                data = status_tool.status(st)
                if as_json:
                    echo_json(data)
                else:
                    live.update(_status_view(data), refresh=True)
        except KeyboardInterrupt:
            return


def _job_note(job: dict[str, Any]) -> str:
    ray = job.get("ray")
    if not ray:
        return str(job.get("note", ""))
    text = f"ray {ray.get('submission_id')}"
    if ray.get("status"):
        text += f": {ray['status']}"
    return f"{text}; {job['note']}" if job.get("note") else text


def _status_view(data: dict[str, Any]) -> Group:
    q = data["queue"]
    head = (
        f"state {data['state_url']}: pending {q['pending']}, running {q['running']}, "
        f"succeeded {q['succeeded']}, failed {q['failed']}, cancelled {q['cancelled']}, "
        f"submitted {q['submitted']}; "
        f"failed batches {data['failed_batches']}, quarantined records "
        f"{data['quarantined_records']}"
    )
    jobs = Table(title="recent jobs")
    for col in ("job", "status", "created", "wall s", "rows out", "rows/s", "note"):
        jobs.add_column(col)
    for j in data["jobs"]:
        jobs.add_row(
            j["job_id"],
            str(j.get("status")),
            str(j.get("created_at", "")),
            str(j.get("wall_s", "")),
            str(j.get("rows_out", "")),
            str(j.get("throughput_rows_s", "")),
            _job_note(j),
        )
    stages = Table(title="checkpoints by stage")
    for col in ("stage", "succeeded", "failed", "rows in", "rows out", "quarantined"):
        stages.add_column(col)
    for name, s in data["stages"].items():
        stages.add_row(
            name,
            str(s["succeeded"]),
            str(s["failed"]),
            f"{s['rows_in']:,}",
            f"{s['rows_out']:,}",
            str(s["quarantined_records"]),
        )
    parts: list[Any] = [head, jobs, stages]
    for d in data["damage"]:  # one line each, not wrapped: file:line is copied from it
        warning = Text.from_markup(f"[yellow]warning: damaged state, skipped:[/yellow] {escape(d)}")
        warning.no_wrap, warning.overflow = True, "ignore"
        parts.append(warning)
    if data["damage"]:
        parts.append(f"[yellow]fix:[/yellow] {escape(data['damage_fix'])}")
    for b in data.get("stragglers", []):
        parts.append(
            f"[yellow]straggling[/yellow] {b['stage']} {str(b['key'])[:16]} on {b['actor']} "
            f"(job {b['job_id']}): running {b['running_now_s']}s, flagged past "
            f"{b['threshold_s']}s"
        )
    for f in data["failures"][:10]:
        parts.append(
            f"[red]failed[/red] {f['stage']} {f['key'][:16]} attempt {f['attempt']}: "
            f"{f['error_type']}: {escape(f['message'][:160])}"
        )
    return Group(*parts)


@click.command()
@state_option
@click.option("--apply", is_flag=True, help="Remove what is listed (default: only list).")
@click.option(
    "--grace",
    default=gc_tool.GC_GRACE_S,
    show_default=True,
    help="Seconds: anything younger is kept (a live run may be about to commit it).",
)
@json_option
def gc(state: State, apply: bool, grace: float, as_json: bool) -> None:
    """List (then, with --apply, remove) unreferenced artifacts and stale temporaries."""
    result = gc_tool.gc(state, apply=apply, grace_s=grace)
    if as_json:
        echo_json(result)
        return
    for c in result["candidates"]:
        _out.print(f"{'removed' if apply else 'would remove'} {c['kind']} {c['path']}")
    _out.print(
        f"{len(result['candidates'])} objects, {result['bytes']:,} bytes "
        f"{'removed' if apply else 'reclaimable (rerun with --apply)'}; "
        f"{result['kept_young']} younger than {grace:.0f}s kept"
        + (f"; live jobs: {', '.join(result['live_jobs'])}" if result["live_jobs"] else "")
    )


@click.command()
@click.argument("job_id")
@click.option(
    "--to",
    "to",
    default=None,
    help="Target: a folder, a .parquet/.jsonl file, or a table's path (--format delta/lance; "
    "iceberg: a folder for a SQLite catalog and its warehouse).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "jsonl", *export_tool.TABLE_FORMATS]),
    default="parquet",
    show_default=True,
    help="parquet/jsonl: a folder export (a --to ending in .parquet/.jsonl names its own); "
    "delta, iceberg, lance: append to a table, exactly once per job.",
)
@click.option("--table", default=None, help="Iceberg: the table, namespace.name [winnow.PIPELINE].")
@click.option(
    "--catalog",
    default=None,
    help="Iceberg: a catalog configured the pyiceberg way (~/.pyiceberg.yaml), instead of --to.",
)
@state_option
@json_option
def export(
    job_id: str,
    to: str | None,
    fmt: str,
    table: str | None,
    catalog: str | None,
    state: State,
    as_json: bool,
) -> None:
    """Write JOB's output as one dataset in source order, verified, then published.

    Every source artifact is re-hashed as it is read; the files are written
    under a temporary name beside --to, read back (rows, SHA-256), then
    renamed into place (a folder gets the marker _winnow_export.json, written
    last on object storage). A failed or killed export leaves --to as it was.

    With --format delta, iceberg or lance the rows are appended to a table in
    one commit of the table's own, keyed by the job's output: exporting the
    same job again adds nothing, a later run of the pipeline adds only the
    batches the table does not hold yet, and a killed export leaves the table
    at its previous version.
    """
    if to is None and not (fmt == "iceberg" and catalog):
        raise UsageError("--to is required (or, with --format iceberg, --catalog NAME)")
    if to is not None and to.endswith(".jsonl") and fmt == "parquet":
        fmt = "jsonl"
    result = export_tool.export(state, job_id, to or "", fmt, table=table, catalog=catalog)
    if as_json:
        echo_json(result)
    elif fmt in export_tool.TABLE_FORMATS:
        _print_table_export(result)
    else:
        _print_export(result)


def _print_export(result: dict[str, Any]) -> None:
    _out.print(
        f"exported {result['rows']:,} rows of {result['job_id']} to {result['to']} "
        f"({len(result['files'])} files)"
    )
    if result["marker"]:
        _out.print(f"verified; marker {result['marker']} lists each part's rows and SHA-256")
    else:
        _out.print(f"verified; sha256 {result['parts'][0]['sha256']}")
    if result["missing_batches"]:
        _out.print(f"[yellow]{result['missing_batches']} batches had no output (failed)[/yellow]")


def _print_table_export(result: dict[str, Any]) -> None:
    if result["committed"]:
        _out.print(
            f"appended {result['rows']:,} rows ({result['batches']} batches) of "
            f"{result['job_id']} to {result['table']}, commit {result['version']}; "
            f"{result['batches_held']} batches were there already; "
            f"{result['table_rows']:,} rows in all"
        )
    elif result["version"] is not None:
        _out.print(
            f"{result['table']} holds {result['job_id']}'s output already "
            f"(commit {result['version']}): nothing added"
        )
    else:
        _out.print(
            f"{result['table']} holds every batch of {result['job_id']} already: nothing added"
        )
    if result["missing_batches"]:
        _out.print(f"[yellow]{result['missing_batches']} batches had no output (failed)[/yellow]")


@click.group()
def lock() -> None:
    """The pipeline locks: one run of a pipeline per state at a time."""


@lock.command("status")
@state_option
@json_option
def lock_status(state: State, as_json: bool) -> None:
    """Every pipeline lock in the state: holder, lease, and whether it is stale."""
    st = state
    locks = [{**vars(info), "stale": info.stale_reason()} for info in st.locks().list()]
    for item in locks:
        item.pop("token", None)
    if as_json:
        echo_json({"locks": locks})
        return
    if not locks:
        _out.print("no pipeline locks held")
    for info, item in zip(st.locks().list(), locks, strict=False):
        verdict = (
            f"[yellow]stale[/yellow]: {item['stale']}" if item["stale"] else "[green]live[/green]"
        )
        _out.print(f"{info.pipeline}: {escape(info.describe())} — {verdict}")


@lock.command("release")
@click.argument("pipeline")
@click.option("--force", is_flag=True, help="Release even a lock whose holder may be alive.")
@state_option
def lock_release(pipeline: str, force: bool, state: State) -> None:
    """Break PIPELINE's lock (a stale one, or any with --force)."""
    store = state.locks()
    info = store.read(pipeline)
    if info is None:
        _out.print(f"{pipeline}: no lock held")
        return
    reason = info.stale_reason()
    if reason is None and not force:
        raise UsageError(
            f"{pipeline}'s lock is held by a live run ({info.describe()}); "
            "stop that run, or pass --force if you are sure it is dead"
        )
    store.release(pipeline)
    _out.print(f"released {pipeline}'s lock ({info.describe()}; {reason or 'forced'})")


@click.command()
@click.argument("job_id")
@click.option("--to", "to", required=True, help="Where the HTML file goes (any fsspec URL).")
@state_option
def report(job_id: str, to: str, state: State) -> None:
    """A self-contained HTML page about JOB: counts, plots, errors, quarantine."""
    from winnow.tools import report as reports

    reports.write(state, job_id, to)
    _out.print(f"wrote {to}")
