"""The HTML pieces of ``winnow report``.

The page's style, tables, sections, inline images and status badges. Every
value is escaped here; nothing on a page is fetched from elsewhere.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from winnow.records import JobStatus
from winnow.tools import plots

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:62em;padding:0 1em;color:#222}
h1{font-size:1.6em}h1 small{font-weight:normal;color:#666;font-size:.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f2f2f2;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{background:#f6f6f6;padding:.1em .3em}pre{overflow-x:auto;font-size:.85em}
.ok{color:#1a7f37}.bad{color:#c62828}.muted{color:#666}
td.bad{background:#fdecea;font-weight:bold}
.status{display:inline-block;padding:.05em .5em;border-radius:.3em;color:#fff;font-weight:bold}
.status.ok{background:#1a7f37}.status.bad{background:#c62828}.status.other{background:#777}
.lead{font-size:1.1em;padding:.6em .9em;border-left:.3em solid #1a7f37;background:#f3faf4}
.lead.bad{border-color:#c62828;background:#fdecea;color:#222}
.lead.note{border-color:#3b7dd8;background:#eef4fc}
"""


def esc(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value))


def number(value: Any) -> str:
    """A count with thousands separators; anything else as it is."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def section(anchor: str, title: str, body: str) -> str:
    """A ``<section id=anchor>`` with its title and body (HTML)."""
    return f"<section id='{anchor}'><h2>{esc(title)}</h2>{body}</section>"


def image(fig: Any) -> str:
    """A matplotlib figure as an inline PNG ``<img>`` (the figure is closed)."""
    title = fig.axes[0].get_title() if fig.axes else "chart"
    data = base64.b64encode(plots.to_png(fig)).decode()
    return f"<img alt='{esc(title)}' src='data:image/png;base64,{data}'>"


def table(
    header: list[str] | None, rows: list[list[Any]], bad: set[tuple[int, int]] | None = None
) -> str:
    """A table of ``rows``; numbers right-aligned.

    Args:
        header: the column titles; None for a table without a header row.
        rows: the cells, escaped here.
        bad: the (row, column) cells to show in red.
    """
    bad = bad or set()
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, c in enumerate(row):
            css = ("n " if isinstance(c, int | float) and not isinstance(c, bool) else "") + (
                "bad" if (i, j) in bad else ""
            )
            cells.append(f"<td class='{css.strip()}'>{esc(number(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def badge(status: Any) -> str:
    """A job status as a coloured badge: green SUCCEEDED, red FAILED, grey otherwise."""
    css = {JobStatus.SUCCEEDED: "ok", JobStatus.FAILED: "bad"}.get(status, "other")
    return f"<span class='status {css}'>{esc(status)}</span>"
