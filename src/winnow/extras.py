"""Optional dependencies: import one, or say in one line how to install it.

Each integration with the data ecosystem lives behind an extra of the
``winnow`` package (``winnow[delta]``, ``[iceberg]``, ``[lance]``, ``[hf]``,
``[lineage]``, ``[s3]``, ``[gcs]``); ``require`` imports the module it needs
and, when the extra is not installed, raises a ``UsageError`` naming the
feature and the command that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from winnow.errors import UsageError

EXTRAS = {
    "deltalake": "delta",
    "pyiceberg": "iceberg",
    "lance": "lance",
    "datasets": "hf",
    "openlineage": "lineage",
    "s3fs": "s3",
    "gcsfs": "gcs",
}


def install_hint(extra: str) -> str:
    """The commands that install ``extra``: in a uv project, and with pip."""
    return f"uv sync --extra {extra}` (or `pip install 'winnow[{extra}]'"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``deltalake``, ``pyiceberg.catalog``) for ``feature``.

    Args:
        module: the module to import; its top-level package names the extra.
        feature: what needs it, as the user asked for it (``--format delta``).

    Raises:
        UsageError: the module is not installed; the message names the extra
            and how to install it.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed
        extra = EXTRAS.get(top)
        if extra is None:
            raise UsageError(f"{feature} needs the Python package {top!r}: install it") from e
        raise UsageError(
            f"{feature} needs the {extra!r} extra, not installed: run `{install_hint(extra)}`"
        ) from e
