"""``winnow invalidate``: make the next run recompute what one stage version produced."""

from __future__ import annotations

import click

from winnow.cli.console import out as _out
from winnow.cli.options import echo_json, json_option, state_option
from winnow.storage.state import State


@click.command()
@click.argument("stage")
@click.option("--version", "version", default=None, help="Only batches this stage version made.")
@click.option(
    "--fingerprint", default=None, help="Only batches made under this fingerprint (prefix)."
)
@click.option("--job", "job_id", default=None, help="Only batches this job committed.")
@click.option("--all", "everything", is_flag=True, help="Every committed batch of the stage.")
@state_option
@json_option
def invalidate(
    stage: str,
    version: str | None,
    fingerprint: str | None,
    job_id: str | None,
    everything: bool,
    state: State,
    as_json: bool,
) -> None:
    """Mark STAGE's committed batches for recomputation on the next run.

    Use it when a stage's output is wrong although its code, parameters and
    version are unchanged (a model swapped under it, a bug in a pinned stage).
    Artifacts stay; the next run recomputes the selected batches and the
    stages after them. `winnow run ... --rerun STAGE` does this for one run.
    """
    from winnow.tools.invalidate import invalidate as run_invalidate

    result = run_invalidate(state, stage, version, fingerprint, job_id, everything)
    if as_json:
        echo_json(result)
        return
    _out.print(
        f"invalidated {result['invalidated']} committed batches of {stage}; "
        "the next run recomputes them"
    )
    if result["untracked"]:
        _out.print(
            f"{result['untracked']} batches were committed before stage versions were recorded "
            "and were not matched; select them with --job ID or --all"
        )
