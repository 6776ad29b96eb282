"""Progress where someone watches: a notebook (a real kernel), a terminal, or nowhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from rich.console import Console

from tests.conftest import ROOT
from winnow.progress import NotebookBars, StageBars, auto_progress, in_notebook


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_where_someone_watches():
    assert not in_notebook()  # pytest is no kernel
    assert auto_progress(io.StringIO()) is None  # piped to a file: nothing drawn
    assert isinstance(auto_progress(Terminal()), StageBars)


def test_notebook_bars_draw_every_stage_in_order():
    bars = NotebookBars()
    bars.totals, bars.done, bars.rows = {"<b>": 4, "embed": 4}, {"<b>": 4, "embed": 1}, {}
    assert [line[:3] for line in bars.lines()] == [("<b>", 4, 4), ("embed", 1, 4)]
    page = bars.html()
    assert "&lt;b&gt;" in page and "<b>" not in page  # stage names are escaped
    assert "<progress value='1' max='4'" in page
    assert bars.text().splitlines()[1].startswith("embed")


def test_a_straggling_stage_is_flagged_on_its_bar_until_it_ends():
    bars = NotebookBars()
    bars.totals, bars.done, bars.rows = {"embed": 4, "upper": 4}, {"embed": 1, "upper": 0}, {}
    bars.straggling("embed", 2)
    assert "2 straggling batches" in bars.text().splitlines()[0]
    assert "straggling" not in bars.text().splitlines()[1]
    bars.straggling("embed", 0)
    assert "straggling" not in bars.text()

    out = Terminal()
    terminal = StageBars(Console(file=out, width=120))
    terminal.start({"embed": 4}, {"embed": 0})
    terminal.straggling("embed", 1)
    terminal.stop()
    assert "1 straggling batch" in out.getvalue()


@pytest.mark.slow
def test_winnow_run_in_a_notebook_shows_one_table_updated_in_place(
    tmp_path: Path, demo_inputs: list[str]
):
    run = (
        "import winnow\n"
        f"result = winnow.run({str(ROOT / 'pipelines' / 'demo.py')!r}, profile='local-cpu', "
        f"inputs={demo_inputs!r}, state='state', output='out', sets=['batch_rows=700'], "
        "executor='local')"
    )
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(run),
            nbformat.v4.new_code_cell(
                "print(result.status, result.rows_out, len(result.to_pandas()))"
            ),
        ]
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = nb.cells[0].outputs
    tables = [o for o in outputs if o.output_type == "display_data"]
    assert len(tables) == 1  # one table, redrawn through its display id
    html = tables[0].data["text/html"]
    text = tables[0].data["text/plain"]
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "state").glob("jobs/*.json")]
    batches = record["batches"]
    for stage in ("normalize", "quality", "embed"):  # the final drawing: every batch done
        assert f"<td style='text-align:left'>{stage}</td>" in html
        assert f"{stage}" in text
    assert html.count(f"{batches}/{batches}") == 3
    noise = [
        line
        for o in outputs
        if o.output_type == "stream"
        for line in o.text.splitlines()
        if "embed: running on CPU" not in line  # the demo's own note
    ]
    assert noise == []
    assert nb.cells[1].outputs[0].text.split() == [
        "SUCCEEDED",
        str(record["rows_out"]),
        str(record["rows_out"]),
    ]
