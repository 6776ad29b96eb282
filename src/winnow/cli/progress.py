"""Live per-stage progress bars (rich), written to stderr.

They live in :mod:`winnow.progress`, shared with the Python API (``winnow.run``).
"""

from __future__ import annotations

from winnow.progress import RowsPerSecond, StageBars

__all__ = ["RowsPerSecond", "StageBars"]
