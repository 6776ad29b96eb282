"""The ``winnow`` command line: parse, load, call the library, print.

Exit codes: 0 ok, 1 failures, 2 usage/config error (nothing written),
130 interrupted.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from winnow import api
from winnow.cli import console
from winnow.cli.console import escape
from winnow.cli.options import executor_option, json_option, request_options
from winnow.cli.summary import print_summary, summary
from winnow.errors import Interrupted, WinnowError
from winnow.jobs import reconcile_lost_jobs
from winnow.records import JobStatus
from winnow.request import RunRequest

# Commands defined outside this module, imported only when named (or listed by
# --help): the gateway's daemon, Prometheus client and journal tools cost a
# tenth of a second to import, a sixth of an all-skipped `winnow run`.
LAZY_COMMANDS = {
    **dict.fromkeys(("verify", "status", "gc", "export", "lock", "report"), "winnow.cli.data"),
    "inspect": "winnow.cli.inspect",
    **dict.fromkeys(("enqueue", "gateway"), "winnow.cli.gateway"),
    "submit": "winnow.cli.cluster",
    "invalidate": "winnow.cli.invalidate",
}


class LazyGroup(click.Group):
    """A group whose ``LAZY_COMMANDS`` load from their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name: the ones defined here and the lazily loaded ones."""
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing its module first if it is a lazy one."""
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module = importlib.import_module(LAZY_COMMANDS[cmd_name])
            command = getattr(module, cmd_name)
            self.add_command(command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="winnow")
def cli() -> None:
    """Winnow: Ray-distributed batch pipelines with verified, resumable checkpoints."""


@cli.command()
@request_options(executor=True)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to attach to (ray://HEAD:10001, HOST:6379 or auto); default: embedded "
    "local Ray.",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Start the embedded Ray with its dashboard on 127.0.0.1 and print its URL "
    "(profile key ray_dashboard); with --address the cluster's URL is printed anyway.",
)
@click.option(
    "--lineage/--no-lineage",
    default=None,
    help="Emit OpenLineage events (START, COMPLETE/FAIL/ABORT) or not (profile key "
    "lineage.enabled); default: when OpenLineage is configured (OPENLINEAGE_URL, "
    "OPENLINEAGE_CONFIG, openlineage.yml).",
)
@click.option("--job-id", default=None, hidden=True, help="Use this job id (winnow submit).")
def run(
    request: RunRequest,
    as_json: bool,
    address: str | None,
    dashboard: bool,
    lineage: bool | None,
    job_id: str | None,
) -> None:
    """Run PIPELINE in the foreground, skipping every committed batch."""
    if lineage is not None:
        request = request.but(sets=(*request.sets, f"lineage={str(lineage).lower()}"))
    if dashboard:
        if request.executor == "local":
            raise click.UsageError("--dashboard watches Ray: drop it or use --executor ray")
        request = request.but(sets=(*request.sets, "ray_dashboard=true"))
    signals = _install_signal_handlers()
    session = api.resolve_session(request, console.note)
    _run_session(session, signals, address, as_json, job_id=job_id)


@cli.command()
@click.option("--failed", is_flag=True, required=True, help="Re-run failed and poison batches.")
@click.option("--job", "job_id", default=None, help="The job to retry (default: the latest).")
@click.option("--state", default=None, help="State root URL.")
@click.option("--profile", "-p", default=None, help="Profile (default: the job's own, resolved).")
@click.option("--address", default=None, help="Ray cluster to attach to.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@executor_option
def retry(
    failed: bool,
    job_id: str | None,
    state: str | None,
    profile: str | None,
    address: str | None,
    as_json: bool,
    executor: str,
) -> None:
    """Re-run only the batches that failed (poison batches included) in a job's state."""
    signals = _install_signal_handlers()
    session = api.retry_session(state, job_id, profile, executor)
    if not api.plan(session, only_failed=True).work:
        # Nothing to do is not a job: recording one would make an empty run "the latest".
        message = f"no failed batches in state {session.state.display()}: nothing to retry"
        if as_json:
            click.echo(json.dumps({"status": "NOTHING_TO_RETRY", "message": message}))
        else:
            console.out.print(escape(message), highlight=False)
        return
    _run_session(session, signals, address, as_json, only_failed=failed)


def _run_session(
    session: api.Session,
    signals: tuple[threading.Event, threading.Event],
    address: str | None,
    as_json: bool,
    only_failed: bool = False,
    job_id: str | None = None,
) -> None:
    for note in session.notes:
        console.note(note)
    stop, started = signals
    progress = None
    if not as_json:
        from winnow.cli.progress import StageBars  # rich.progress: only where bars are drawn

        progress = StageBars(console.err)
    # With --json, stdout carries exactly one object: whatever Ray or a worker
    # prints while the job runs goes to stderr.
    with _stdout_to_stderr() if as_json else contextlib.nullcontext():
        record = api.execute(
            session,
            address=address,
            progress=progress,
            stop=stop,
            only_failed=only_failed,
            job_id=job_id,
            notify=console.note,
            started=started,
        )
    if as_json:
        click.echo(json.dumps(summary(record), sort_keys=True))
    else:
        print_summary(record)
    if record["status"] == JobStatus.CANCELLED:
        raise Interrupted(
            "interrupted: committed batches stay committed; rerun the same command to finish"
        )
    if record["status"] != JobStatus.SUCCEEDED:
        sys.exit(1)


@cli.command()
@request_options()
@click.option(
    "--address",
    default=None,
    help="Size the pools against this Ray cluster (default: this machine).",
)
def plan(request: RunRequest, as_json: bool, address: str | None) -> None:
    """Dry run: what a run would do, and why; nothing is written.

    Per stage, how many batches will run, be skipped or retried, and why; how
    many actors of each stage the cluster can host.
    """
    from winnow.execution.capacity import for_plan

    session = api.resolve_session(request, console.note)
    for note in session.notes:
        console.note(note)
    the_plan = api.plan(session)
    for line in api.damage_notes(the_plan):
        console.warning(line)
    data = the_plan.to_dict()
    active = [s.get("pending", False) or s["run"] + s["retry"] > 0 for s in data["stages"]]
    specs = the_plan.all_specs()
    # A grouping stage's reduce side runs in a later segment, on its own actors:
    # each segment is sized against the cluster on its own, as a run sizes it.
    cap: dict[str, Any] = {}
    start = 0
    for size in [len(the_plan.specs), *(len(b.specs) for b in the_plan.barriers())]:
        stop = start + size
        one = for_plan(specs[start:stop], active[start:stop], address, session.profile.ray_num_cpus)
        if not cap:
            cap = one
        else:
            cap["actors"] = {**cap["actors"], **one["actors"]}
            cap["problems"] = [*cap["problems"], *one["problems"]]
        start = stop
    data["capacity"] = cap
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    from rich.table import Table

    table = Table(
        title=f"plan: {data['pipeline']} ({data['profile']}), {data['files']} files, {data['batches']} batches"
    )
    for col in ("stage", "run", "retry", "skip", "why", "resources", "actors"):
        table.add_column(col)
    for s in data["stages"]:
        why = "; ".join(f"{k}: {v}" for k, v in sorted(s["reasons"].items(), key=lambda kv: -kv[1]))
        if s.get("pending"):
            why = "; ".join(s["reasons"])
        r = s["resources"]
        res = f"{r['num_cpus']:g} CPU, {r['num_gpus']:g} GPU x {r['min_actors']}-{r['max_actors']}"
        actors = str(cap["actors"].get(s["name"], "-"))
        table.add_row(s["name"], str(s["run"]), str(s["retry"]), str(s["skip"]), why, res, actors)
    console.out.print(table)
    for g in data.get("groupings", []):
        parts = "pending upstream" if g["pending"] else f"{g['reduce_partitions']} non-empty"
        if "skew" in g:
            r = g["partition_rows"]
            parts += f"; rows per partition {r['min']}-{r['max']}, skew {g['skew']:g}"
        inputs = "?" if g["map_batches"] is None else g["map_batches"]
        if g["declared_partitions"] < g["partitions"]:
            parts += f"; raised from {g['declared_partitions']} for the input's size"
        console.out.print(
            f"grouping stage {g['stage']}: {inputs} map batches -> "
            f"{g['partitions']} partitions ({parts})",
            highlight=False,
        )
        if g.get("over_budget"):
            fix = (
                "it reduces its whole input at once: give it less input, or raise partition_mb "
                "if a worker has the memory"
                if g["global"]
                else f"raise {g['stage']}.partitions or partition_mb, or spread the key"
            )
            console.err.print(
                f"[yellow]warning:[/yellow] {g['stage']}: partition(s) "
                f"{', '.join(map(str, g['over_budget']))} hold more than partition_mb "
                f"({session.profile.partition_mb} MB): {fix}",
                highlight=False,
            )
    for r in data.get("rejoins", []):
        context = "pending upstream" if r["pending"] else f"{r['context_artifacts']} artifact(s)"
        console.out.print(
            f"rejoin stage {r['stage']}: {r['input_batches']} input batches read again, "
            f"with the output of the stage before it ({context})",
            highlight=False,
        )
    c = cap["cluster"]
    console.out.print(
        f"capacity: {c['source']}, {c['nodes']} node(s), {c['CPU']:g} CPU, {c['GPU']:g} GPU; "
        f"GPUs: {cap['nvml']}",
        highlight=False,
    )
    for problem in cap["problems"]:
        console.err.print(f"[red]cannot run:[/red] {escape(problem)}")


@cli.command()
@click.option("--state", default=None, help="State root URL.")
@json_option
def jobs(state: str | None, as_json: bool) -> None:
    """The history of runs, newest first."""
    st = api.open_state(state)
    reconcile_lost_jobs(st)
    records = st.list_jobs()
    if as_json:
        click.echo(json.dumps({"jobs": [summary(r) for r in records]}, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title="jobs")
    for col in ("job", "pipeline", "status", "created", "wall s", "rows in", "rows out"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r["job_id"],
            r.get("pipeline", ""),
            r.get("status", ""),
            r.get("created_at", ""),
            str(r.get("wall_s", "")),
            str(r.get("rows_in", "")),
            str(r.get("rows_out", "")),
        )
    console.out.print(table)


def _install_signal_handlers() -> tuple[threading.Event, threading.Event]:
    """Handle SIGINT/SIGTERM for a run; return the (stop, started) events it shares.

    Before the job starts (loading, planning, starting Ray), stop at once:
    nothing is written yet. Once it runs, finish in-flight batches; a second
    signal abandons them.
    """
    stop, started = threading.Event(), threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() or not started.is_set():
            raise KeyboardInterrupt
        console.err.print(
            f"[yellow]{signal.Signals(signum).name}: finishing in-flight batches; "
            "send again to abandon them[/yellow]"
        )
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop, started


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr for the block (Ray's log lines, workers' prints)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _json_error(argv: list[str], kind: str, message: str, code: int) -> None:
    """With --json, a failure is still one JSON object on stdout."""
    if "--json" in argv:
        click.echo(json.dumps({"error": {"type": kind, "message": message, "exit_code": code}}))


def _exit(code: int) -> None:
    """Exit now: threads still blocked on a read (a planning worker) must not hold us."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: map Winnow's error types to exit codes in one place."""
    # What the imports built (pyarrow, numpy, pydantic's models: ~50,000 tracked objects) lives
    # as long as the command; left to the collector, every full collection and the one at
    # exit traverse it for nothing (~60 ms of a 0.4 s all-skipped rerun).
    gc.freeze()
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=argv, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns ^C into Abort
        console.err.print("interrupted: nothing half-done is marked done; rerun the same command")
        _json_error(args, "Interrupted", "interrupted", 130)
        _exit(130)
    except click.ClickException as exc:
        exc.show()
        code = 2 if isinstance(exc, click.UsageError) else exc.exit_code
        _json_error(args, type(exc).__name__, exc.format_message(), code)
        sys.exit(code)
    except WinnowError as exc:
        console.err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        _json_error(args, type(exc).__name__, str(exc), exc.exit_code)
        if isinstance(exc, Interrupted):
            _exit(130)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
