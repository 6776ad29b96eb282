"""Live per-stage progress bars (rich), written to stderr."""

from __future__ import annotations

import time

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
    """One bar per stage: batches done/total and rows/s of this run."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            RowsPerSecond(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def start(self, totals: dict[str, int], done: dict[str, int]) -> None:
        """Add one bar per stage (``done`` batches already complete) and start drawing."""
        now = time.monotonic()
        for name, total in totals.items():
            self.tasks[name] = self.bars.add_task(
                name, total=total, completed=done[name], rows=0, t0=now
            )
        self.bars.start()

    def advance(self, stage: str, rows: int) -> None:
        """One batch of ``stage`` finished with ``rows`` rows out: move its bar on."""
        task = self.tasks[stage]
        rows_so_far = self.bars.tasks[task].fields.get("rows", 0) + rows
        self.bars.update(task, advance=1, rows=rows_so_far)

    def stop(self) -> None:
        """Stop drawing; the bars stay on screen."""
        self.bars.stop()
