"""Options shared by the commands that resolve a session (run, plan, submit, enqueue)."""

from __future__ import annotations

from typing import Any

import click

from winnow import api


def session_options(fn: Any) -> Any:
    options = [
        click.option(
            "--profile", "-p", default=None, help="Profile name from profiles/ or a TOML path."
        ),
        click.option(
            "--input",
            "inputs",
            multiple=True,
            help="Input file, folder or glob (any fsspec URL); repeatable.",
        ),
        click.option(
            "--output",
            default=None,
            help=f"Where artifacts and manifests go (default {api.DEFAULT_OUTPUT}).",
        ),
        click.option(
            "--state",
            default=None,
            help="State root URL (default $WINNOW_STATE or .winnow/state/v1).",
        ),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a profile key or a stage parameter (<stage>.<param>=value).",
        ),
        click.option(
            "--verify",
            type=click.Choice(["size", "full"]),
            default=None,
            help="How committed artifacts are checked before a skip (full re-hashes).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


rerun_option = click.option(
    "--rerun",
    "rerun",
    default=None,
    metavar="STAGE",
    help="Recompute every batch of STAGE and of the stages after it, committed or not.",
)
