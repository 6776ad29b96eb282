"""Executing a plan: the executor seam, the driver loop, and Ray's actor pools.

Two executors (``executor``): on Ray, or in this process without Ray (``local``).

Under `uv run`, Ray (by default) rebuilds the project's environment for every
worker from pyproject.toml alone, which drops optional extras such as s3fs and
costs seconds per start. An embedded Ray should share this interpreter's
environment, so that is switched off here, before Ray is imported and reads it.
Set RAY_ENABLE_UV_RUN_RUNTIME_ENV=1 to get Ray's behaviour back.

Also before Ray is imported, ``boot/sitecustomize.py`` defers an import that
costs about 1 s of CPU in every process importing Ray when Jupyter is
installed (see that file); the embedded Ray's own processes run it at their
start (``embedded.boot_path``).
"""

import importlib.util
import os

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot")


def _defer_slow_imports() -> None:
    spec = importlib.util.spec_from_file_location(
        "winnow_execution_boot", os.path.join(BOOT, "sitecustomize.py")
    )
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install()


_defer_slow_imports()
