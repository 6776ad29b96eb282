"""How a run shows its progress: one bar per stage, where someone is watching.

In a terminal, rich bars on stderr (:class:`StageBars`, what ``winnow run``
draws); in a Jupyter notebook, an HTML table redrawn in place
(:class:`NotebookBars`: it needs only IPython, which every kernel has, not
ipywidgets); anywhere else (a script's output piped to a file, a test, a
gateway) nothing at all. :func:`auto_progress` picks one.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from winnow.execution.outcome import Progress as RunnerProgress


class RowsPerSecond(ProgressColumn):
    """A progress column: the rows per second a stage has passed on since this run started."""

    def render(self, task: Task) -> Text:
        """The rate for one stage's bar (blank until it has passed rows)."""
        rows = task.fields.get("rows", 0)
        elapsed = max(time.monotonic() - task.fields.get("t0", time.monotonic()), 1e-6)
        return Text(f"{rows / elapsed:,.0f} rows/s" if rows else "", style="cyan")


class StageBars(RunnerProgress):
    """One bar per stage: batches done/total and rows/s of this run (rich, on a console).

    Args:
        console: where to draw (default: stderr).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            RowsPerSecond(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}", style="yellow"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def start(self, totals: dict[str, int], done: dict[str, int]) -> None:
        """Add one bar per stage (``done`` batches already complete) and start drawing."""
        now = time.monotonic()
        for name, total in totals.items():
            self.tasks[name] = self.bars.add_task(
                name, total=total, completed=done[name], rows=0, t0=now, note=""
            )
        self.bars.start()

    def advance(self, stage: str, rows: int) -> None:
        """One batch of ``stage`` finished with ``rows`` rows out: move its bar on."""
        task = self.tasks[stage]
        rows_so_far = self.bars.tasks[task].fields.get("rows", 0) + rows
        self.bars.update(task, advance=1, rows=rows_so_far)

    def straggling(self, stage: str, count: int) -> None:
        """Flag (or, at 0, unflag) a stage's bar: ``count`` batches run far past its norm."""
        self.bars.update(self.tasks[stage], note=straggling_note(count))

    def stop(self) -> None:
        """Stop drawing; the bars stay on screen."""
        self.bars.stop()


class NotebookBars(RunnerProgress):
    """One bar per stage in a notebook cell's output, redrawn in place.

    An HTML table (stage, a ``<progress>`` bar, batches done/total, rows/s,
    elapsed) shown once with a display id and updated through it, at most
    every ``every_s`` seconds and once more when the run ends; a frontend
    without HTML shows the same as text.

    Args:
        every_s: the least time between two redraws.
    """

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.notes: dict[str, str] = {}
        self.t0 = time.monotonic()
        self._drawn = 0.0
        self._handle: Any = None
        self._ended = False

    def start(self, totals: dict[str, int], done: dict[str, int]) -> None:
        """Show the table: every stage with ``done`` of its ``totals`` batches complete."""
        from IPython.display import display

        self.totals, self.done = dict(totals), dict(done)
        self.rows = dict.fromkeys(totals, 0)
        self.t0 = time.monotonic()
        # IPython leaves display() unannotated.
        self._handle = display(_Rendered(self), display_id=True)  # type: ignore[no-untyped-call]
        self._drawn = time.monotonic()

    def advance(self, stage: str, rows: int) -> None:
        """One batch of ``stage`` finished with ``rows`` rows out; redraw if it is time."""
        self.done[stage] = self.done.get(stage, 0) + 1
        self.rows[stage] = self.rows.get(stage, 0) + rows
        if time.monotonic() - self._drawn >= self.every_s:
            self._draw()

    def straggling(self, stage: str, count: int) -> None:
        """Flag (or, at 0, unflag) a stage's row: ``count`` batches run far past its norm."""
        self.notes[stage] = straggling_note(count)
        self._draw()

    def stop(self) -> None:
        """Draw the final state; the table stays in the cell's output."""
        self._ended = True
        self._draw()

    def _draw(self) -> None:
        if self._handle is not None:
            self._handle.update(_Rendered(self))
        self._drawn = time.monotonic()

    def lines(self) -> list[tuple[str, int, int, str, str]]:
        """Per stage: name, batches done, total, rows/s and any straggler flag, elapsed."""
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        clock = time.strftime("%H:%M:%S", time.gmtime(elapsed))
        out = []
        for name, total in self.totals.items():
            rows = self.rows.get(name, 0)
            rate = f"{rows / elapsed:,.0f} rows/s" if rows else ""
            rate = " ".join(filter(None, [rate, self.notes.get(name, "")]))
            out.append((name, self.done.get(name, 0), total, rate, clock))
        return out

    def html(self) -> str:
        """The table as HTML."""
        cells = "".join(
            f"<tr><td style='text-align:left'>{html.escape(name)}</td>"
            f"<td><progress value='{done}' max='{max(total, 1)}' style='width:16em'></progress>"
            f"</td><td>{done}/{total}</td><td>{rate}</td><td>{clock}</td></tr>"
            for name, done, total, rate, clock in self.lines()
        )
        return f"<table class='winnow-progress'>{cells}</table>"

    def text(self) -> str:
        """The table as plain text, for frontends that show no HTML."""
        return "\n".join(
            f"{name:<12} {done}/{total} {rate} {clock}".rstrip()
            for name, done, total, rate, clock in self.lines()
        )


def straggling_note(count: int) -> str:
    """What a stage's bar says while ``count`` of its batches straggle ("" when none)."""
    if not count:
        return ""
    return f"{count} straggling batch{'es' if count > 1 else ''}"


class _Rendered:
    """One drawing of a :class:`NotebookBars`, in the two forms a frontend may pick."""

    def __init__(self, bars: NotebookBars) -> None:
        self._html, self._text = bars.html(), bars.text()

    def _repr_html_(self) -> str:
        return self._html

    def __repr__(self) -> str:
        return self._text


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (a notebook, JupyterLab, VS Code, Colab).

    Nothing is imported to find out: a kernel has already loaded ipykernel.
    """
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    ipython = sys.modules.get("IPython")
    if zmqshell is None or ipython is None:
        return False
    return isinstance(ipython.get_ipython(), zmqshell.ZMQInteractiveShell)


def auto_progress(stream: TextIO | None = None) -> RunnerProgress | None:
    """The progress display for where this process runs, or None where nobody watches.

    Args:
        stream: the terminal stream to draw on (default: ``sys.stderr``).

    Returns:
        :class:`NotebookBars` in a notebook, :class:`StageBars` when ``stream``
        is a terminal, else None (nothing is printed).
    """
    if in_notebook():
        return NotebookBars()
    stream = stream or sys.stderr
    if stream.isatty():
        return StageBars(Console(file=stream))
    return None
