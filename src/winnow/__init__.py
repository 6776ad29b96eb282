"""Winnow: Ray-distributed batch pipelines with verified, resumable checkpoints.

Define stages and a pipeline (``Stage``, ``Pipeline``), then run it:
``winnow.run(pipeline, profile="local-cpu", inputs=[...])`` (or ``input=``
a table, DataFrame, Ray or Hugging Face dataset in memory) returns a
``RunResult`` whose output reads as Arrow, pandas, a Ray or a Hugging Face
Dataset; ``winnow.output(job_id)`` reads any finished job's. The data
tools (``status``, ``inspect_job``, ``verify_state``, ``export`` ...) are the
functions behind the CLI's commands.
"""

from typing import TYPE_CHECKING

from winnow.errors import WinnowError
from winnow.pipeline import Pipeline, load_pipeline
from winnow.profile import Profile, load_profile
from winnow.request import RunRequest
from winnow.stage import Resources, Stage

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and IDEs
    from winnow.api import (
        execute,
        open_state,
        output_table,
        plan,
        resolve_session,
        retry_session,
        run,
    )
    from winnow.result import RunResult, output
    from winnow.tools.explore import batch_records, output_dataset, stage_samples
    from winnow.tools.export import export
    from winnow.tools.gc import gc
    from winnow.tools.inspect import inspect_artifact, inspect_batch, inspect_job
    from winnow.tools.quarantine import quarantined
    from winnow.tools.status import status
    from winnow.tools.verify import verify_state

__all__ = [
    "Pipeline",
    "Profile",
    "Resources",
    "RunRequest",
    "RunResult",
    "Stage",
    "WinnowError",
    "batch_records",
    "execute",
    "export",
    "gc",
    "inspect_artifact",
    "inspect_batch",
    "inspect_job",
    "load_pipeline",
    "load_profile",
    "open_state",
    "output",
    "output_dataset",
    "output_table",
    "plan",
    "quarantined",
    "resolve_session",
    "retry_session",
    "run",
    "stage_samples",
    "status",
    "verify_state",
]


# The API pulls in storage (fsspec), the tools pandas-free but heavier modules;
# import them lazily so `stage`/`pipeline` users do not pay for them.
_LAZY = {
    **dict.fromkeys(
        (
            "run",
            "open_state",
            "resolve_session",
            "execute",
            "plan",
            "output_table",
            "retry_session",
        ),
        "winnow.api",
    ),
    **dict.fromkeys(("RunResult", "output"), "winnow.result"),
    "status": "winnow.tools.status",
    **dict.fromkeys(("inspect_job", "inspect_batch", "inspect_artifact"), "winnow.tools.inspect"),
    "verify_state": "winnow.tools.verify",
    "gc": "winnow.tools.gc",
    "export": "winnow.tools.export",
    "quarantined": "winnow.tools.quarantine",
    "removed": "winnow.tools.removed",
    **dict.fromkeys(("batch_records", "output_dataset", "stage_samples"), "winnow.tools.explore"),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'winnow' has no attribute {name!r}")
    import importlib
    import sys

    importlib.import_module(module)
    # Bind every lazy name whose module is loaded, not only this one: importing
    # winnow.api also imports the submodule winnow.plan, which Python binds as
    # the attribute `winnow.plan`, hiding the function `plan` this name stands for.
    for other, home in _LAZY.items():
        value = getattr(sys.modules.get(home), other, None)
        if value is not None:
            globals()[other] = value
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
