"""The exploration notebook (executed on a real kernel) and the HTML report, on a fresh demo run."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, run_args, run_cli, run_json
from winnow.tools.report import SECTIONS

NOTEBOOK = ROOT / "notebooks" / "explore_artifacts.ipynb"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, demo_inputs: list[str]) -> dict:
    d = tmp_path_factory.mktemp("explore")
    record = run_json(*run_args("demo", d, demo_inputs, "batch_rows=600", profile="local-cpu"))
    return {"record": record, "state": str(d / "state"), "dir": d}


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_a_real_kernel(demo_run: dict, monkeypatch):
    monkeypatch.setenv("WINNOW_STATE", demo_run["state"])
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert demo_run["record"]["job_id"] in text
    assert "matches its checkpoint" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # rows per stage, latency, throughput


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "img":
            self.images.append(a.get("src") or "")


def test_report_is_one_html_file_with_every_section_and_image(demo_run: dict, tmp_path: Path):
    job = demo_run["record"]["job_id"]
    out = tmp_path / "report.html"
    proc = run_cli("report", job, "--to", str(out), "--state", demo_run["state"])
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    parsed = _Collector()
    parsed.feed(page)
    assert parsed.sections == list(SECTIONS)
    assert len(parsed.images) == 3
    for src in parsed.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "matches" in page and "DOES NOT" not in page
    assert json.dumps(job)[1:-1] in page
    assert "<script" not in page and "<link" not in page  # self-contained: nothing to fetch
