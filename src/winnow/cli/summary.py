"""The end of a run on the command line: the summary table, where every row went, or one JSON object."""

from __future__ import annotations

from typing import Any

from winnow.cli import console
from winnow.cli.console import escape


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What `winnow run --json` prints: the job record's outcome fields."""
    keys = (
        "job_id",
        "pipeline",
        "status",
        "batches",
        "counts",
        "rows_in",
        "rows_out",
        "manifest",
        "wall_s",
        "throughput_rows_s",
        "skipped_fraction",
        "bad_records",
        "poison_batches",
        "integrity_failures",
        "error",
        "accounting",
        "output_url",
        "state_url",
        "created_at",
    )
    return {k: record.get(k) for k in keys}


def print_summary(record: dict[str, Any]) -> None:
    """Per stage counts, throughput, failed batches, row accounting and the manifest."""
    from rich.table import Table

    table = Table(title=f"{record['pipeline']} — job {record['job_id']} — {record['status']}")
    for col in (
        "stage",
        "run",
        "skipped",
        "retried",
        "failed",
        "rows in",
        "rows out",
        "bad",
        "busy s",
    ):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for name, c in (record.get("counts") or {}).items():
        table.add_row(
            name,
            str(c["run"]),
            str(c["skipped"]),
            str(c["retried"]),
            str(c["failed"]),
            f"{c['rows_in']:,}",
            f"{c['rows_out']:,}",
            str(c["bad_records"]),
            f"{c['busy_s']:.1f}",
        )
    console.out.print(table)
    skipped = record.get("skipped_fraction", 0) * 100
    console.out.print(
        f"wall {record['wall_s']:.2f}s, {record.get('throughput_rows_s', 0):,.0f} rows/s processed, "
        f"{skipped:.0f}% of stage batches skipped; rows in {record.get('rows_in', 0):,}, "
        f"rows out {record.get('rows_out', 0):,}"
    )
    stalls = [
        f"{name}: {c['straggled']} straggled, {c['speculated']} re-run on an idle actor, "
        f"{c['abandoned']} abandoned past stall_timeout_s"
        for name, c in (record.get("counts") or {}).items()
        if c.get("straggled") or c.get("abandoned")
    ]
    if stalls:
        console.out.print(f"[yellow]stragglers[/yellow] {'; '.join(stalls)}")
    for p in record.get("poison_batches") or []:
        console.out.print(
            f"[red]failed batch[/red] {p['stage']} {p['source']['file']} rows "
            f"{p['source']['start']}-{p['source']['stop']}: {p['error_type']}: {escape(p['message'][:200])}"
        )
    print_accounting(record.get("accounting"))
    if record.get("error"):
        console.err.print(
            f"[red]error:[/red] {escape(record['error']['message'])}", highlight=False
        )
    for p in record.get("integrity_failures") or []:
        console.out.print(
            f"[red]integrity failure[/red] {p['stage']} {p['key'][:16]}…: {escape(p['message'])}"
        )
    console.out.print(f"job id: {record['job_id']}\noutput manifest: {record.get('manifest')}")


def print_accounting(accounting: dict[str, Any] | None, limit: int = 20) -> None:
    """Print where every input row went, per file and in total.

    Files with anything but passed and filtered rows come first, up to
    ``limit`` of them.
    """
    if not accounting:
        return
    files = accounting["files"]
    columns = (
        "read",
        "passed",
        "filtered",
        "quarantined",
        "blank_lines",
        "in_failed_batches",
        "unaccounted",
    )
    # One folder's files are named by file name (the folder goes in the title), so a
    # narrow terminal shows which file a row is about rather than a cut-off prefix.
    folders = {url.rsplit("/", 1)[0] for url in files}
    names = {url.rsplit("/", 1)[-1] for url in files}
    short = len(folders) == 1 and len(names) == len(files)
    title = f"rows by input file in {next(iter(folders))}" if short else "rows by input file"
    from rich.table import Table

    table = Table(title=escape(title))
    table.add_column("file")
    for col in columns:
        table.add_column(col.replace("_", " "), justify="right")

    def notable(item: tuple[str, dict[str, int]]) -> int:
        rows = item[1]
        return -(rows["quarantined"] + rows["in_failed_batches"] + abs(rows["unaccounted"]))

    shown = sorted(files.items(), key=notable)[:limit]
    for url, rows in sorted(shown):
        name = url.rsplit("/", 1)[-1] if short else url
        table.add_row(escape(name), *(f"{rows[c]:,}" for c in columns))
    if len(files) > limit:
        table.add_row(f"… {len(files) - limit} more files", *("" for _ in columns))
    total = accounting["total"]
    table.add_row("[bold]total[/bold]", *(f"[bold]{total[c]:,}[/bold]" for c in columns))
    console.out.print(table)
    by_stage = ", ".join(f"{k} {v:,}" for k, v in total["filtered_by_stage"].items())
    if by_stage:
        console.out.print(f"filtered by stage: {by_stage}", highlight=False)
    if total["unaccounted"]:
        console.err.print(
            f"[red]{total['unaccounted']:,} rows are unaccounted for[/red]: a reader or stage "
            "lost rows without quarantining them; `winnow inspect job --id` has the details"
        )
