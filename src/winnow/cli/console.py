"""Where the command line prints: one console for results, one for notes and errors."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# A fixed width when not on a terminal, so piped and captured output does not wrap at 80.
out = Console() if sys.stdout.isatty() else Console(width=120)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=120)


def note(text: str) -> None:
    """A note for the user on stderr (never on stdout, which ``--json`` keeps for its object)."""
    err.print(f"[yellow]note:[/yellow] {escape(text)}")


def warning(text: str) -> None:
    """A warning on stderr, printed whole (no highlighting, no cropping)."""
    err.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, crop=False)
