"""Winnow: Ray-distributed batch pipelines with verified, resumable checkpoints."""

from winnow.errors import WinnowError
from winnow.pipeline import Pipeline, load_pipeline
from winnow.profile import Profile, load_profile
from winnow.stage import Resources, Stage

__all__ = [
    "Pipeline",
    "Profile",
    "Resources",
    "Stage",
    "WinnowError",
    "load_pipeline",
    "load_profile",
]


def __getattr__(name: str) -> object:
    # The API pulls in storage (fsspec); import it lazily so `stage`/`pipeline`
    # users do not pay for it.
    if name in {
        "run",
        "open_state",
        "resolve_session",
        "execute",
        "plan",
        "output_table",
        "retry_session",
    }:
        import importlib

        return getattr(importlib.import_module("winnow.api"), name)
    if name in {
        "status",
        "inspect_job",
        "inspect_batch",
        "inspect_artifact",
        "verify_state",
        "gc",
        "export",
        "quarantined",
    }:
        import importlib

        return getattr(importlib.import_module("winnow.datatools"), name)
    raise AttributeError(name)
