"""Options written once, shared by the commands that take them.

The ``RunRequest`` ones (run, plan, submit, enqueue) and the
``--state``/``--json`` ones of the data tools.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from winnow import api
from winnow.execution.executor import EXECUTORS
from winnow.profile import load_profile
from winnow.request import VERIFY_MODES, RunRequest

REQUEST_FIELDS = ("pipeline", "profile", "inputs", "output", "state", "sets", "verify", "rerun")


# PIPELINE and the options of a RunRequest (every command that takes one), then --json.
REQUEST_OPTIONS = [
    click.argument("pipeline"),
    click.option(
        "--profile",
        "-p",
        default=None,
        help="Profile: a name (./profiles/<name>.toml, else a packaged one: local-cpu, "
        "gpu-single, high-throughput) or a TOML path.",
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
        type=click.Choice(VERIFY_MODES),
        default=None,
        help="How committed artifacts are checked before a skip (full re-hashes).",
    ),
    click.option(
        "--rerun",
        default=None,
        metavar="STAGE",
        help="Recompute every batch of STAGE and of the stages after it, committed or not.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts."),
]


def request_options(executor: bool = False) -> Callable[[Any], Any]:
    """Add the PIPELINE argument and the run request's options, plus ``--json``.

    The command receives them as one ``request: RunRequest`` (and ``as_json``).
    ``executor`` adds ``--executor`` (only for commands that run stages here).
    """

    def decorate(fn: Any) -> Any:
        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            fields = {name: kwargs.pop(name) for name in REQUEST_FIELDS}
            if executor:
                fields["executor"] = kwargs.pop("executor")
            # Through __wrapped__ (functools.wraps sets it to fn): a test can
            # stand in for the command body and see the request as parsed.
            return command.__wrapped__(request=RunRequest(**fields), **kwargs)

        options = [*REQUEST_OPTIONS, executor_option] if executor else REQUEST_OPTIONS
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


executor_option = click.option(
    "--executor",
    type=click.Choice(list(EXECUTORS)),
    default="ray",
    show_default=True,
    help="Where stages run: Ray actors, or local (this process, no Ray: for pdb, "
    "notebooks and tiny inputs).",
)


def state_option(fn: Any) -> Any:
    """``--state`` (and ``--profile`` for its storage options), given to ``fn`` as a State."""

    @functools.wraps(fn)
    def wrapper(*args: Any, state: str | None, profile: str | None, **kwargs: Any) -> Any:
        options = load_profile(profile).storage_options if profile else None
        st = api.open_state(state, options)
        st.check_version()
        return fn(*args, state=st, **kwargs)

    wrapper = click.option(
        "--profile",
        "-p",
        default=None,
        help="Profile whose storage_options reach the state (endpoint, credentials).",
    )(wrapper)
    return click.option(
        "--state", default=None, help="State root URL (default $WINNOW_STATE or .winnow/state/v1)."
    )(wrapper)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def echo_json(data: Any) -> None:
    """Print one JSON object on stdout (keys sorted; dates and paths as strings)."""
    click.echo(json.dumps(data, sort_keys=True, default=str))
