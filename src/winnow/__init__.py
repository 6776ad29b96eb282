"""Winnow: Ray-distributed batch pipelines with verified, resumable checkpoints."""

from winnow.errors import WinnowError
from winnow.pipeline import Pipeline, load_pipeline
from winnow.profile import Profile, load_profile
from winnow.request import RunRequest
from winnow.stage import Resources, Stage

__all__ = [
    "Pipeline",
    "Profile",
    "Resources",
    "RunRequest",
    "Stage",
    "WinnowError",
    "load_pipeline",
    "load_profile",
]


# The API pulls in storage (fsspec); import it lazily so `stage`/`pipeline`
# users do not pay for it.
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
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
