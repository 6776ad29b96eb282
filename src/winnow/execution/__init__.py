"""Executing a plan: the executor seam, the driver loop, and Ray's actor pools.

Two executors (``executor``): on Ray, or in this process without Ray (``local``).

Under `uv run`, Ray (by default) rebuilds the project's environment for every
worker from pyproject.toml alone, which drops optional extras such as s3fs and
costs seconds per start. An embedded Ray should share this interpreter's
environment, so that is switched off here, before Ray is imported and reads it.
Set RAY_ENABLE_UV_RUN_RUNTIME_ENV=1 to get Ray's behaviour back.
"""

import os

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
