"""Where the command line prints: one console for results, one for notes and errors.

``out`` and ``err`` are rich consoles made on first use (module attributes
resolved lazily): a command that prints only JSON, such as an all-skipped
``winnow run --json``, never imports rich.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    out: Console
    err: Console

_consoles: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _consoles:
        from rich.console import Console

        # A fixed width when not on a terminal, so piped and captured output does not wrap at 80.
        stream = sys.stderr if name == "err" else sys.stdout
        width = None if stream.isatty() else 120
        _consoles[name] = Console(stderr=name == "err", width=width)
    return _consoles[name]


def escape(text: str) -> str:
    """``text`` with rich markup escaped (rich imported on first use)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def note(text: str) -> None:
    """A note for the user on stderr (never on stdout, which ``--json`` keeps for its object)."""
    __getattr__("err").print(f"[yellow]note:[/yellow] {escape(text)}")


def warning(text: str) -> None:
    """A warning on stderr, printed whole (no highlighting, no cropping)."""
    __getattr__("err").print(
        f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, crop=False
    )
