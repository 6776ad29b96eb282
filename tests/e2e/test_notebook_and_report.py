"""The exploration notebook (executed on a real kernel) and the HTML report, on a fresh
demo run, its all-skipped rerun and a failed job of another pipeline in the same state."""

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


@pytest.fixture(scope="module")
def rerun(demo_run: dict, demo_inputs: list[str]) -> dict:
    """The same demo command again: every batch skipped, the newest demo job."""
    args = run_args("demo", demo_run["dir"], demo_inputs, "batch_rows=600", profile="local-cpu")
    record = run_json(*args)
    assert record["skipped_fraction"] == 1.0
    return record


@pytest.fixture(scope="module")
def failed_run(demo_run: dict) -> dict:
    """A flaky job in the same state whose batches holding id 40 or 80 fail for good."""
    d = demo_run["dir"]
    (d / "marks").mkdir()
    rows = "".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(1, 101))
    (d / "flaky.jsonl").write_text(rows)
    sets = [
        "batch_rows=25",
        "flaky.fail_mod=40",
        "flaky.fail_times=9",
        f"flaky.marks={d / 'marks'}",
    ]
    args = run_args("tests/pipelines/flaky.py", d, [d / "flaky.jsonl"], *sets, profile="local-cpu")
    record = run_json(*args, "--executor", "local", expect=1)
    assert len(record["poison_batches"]) == 2
    return record


def execute(state: str, **parameters: object) -> list:
    """Run the notebook top to bottom on a real kernel with ``parameters`` set right
    after its cell tagged ``parameters`` (as papermill does); its code cells' outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [at] = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    given = {"state_url": state, **parameters}
    nb.cells.insert(
        at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in given.items()))
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    return outputs


def _text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _images(outputs: list) -> int:
    return sum(1 for o in outputs if "image/png" in o.get("data", {}))


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_notebook_takes_pipeline_and_job_as_parameters_at_the_top():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.metadata.get("tags") == ["parameters"]
    names = {line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line}
    assert {"pipeline", "job_id", "state_url"} <= names


@pytest.mark.slow
def test_notebook_after_an_all_skipped_rerun_shows_the_rerun(demo_run: dict, rerun: dict):
    outputs = execute(demo_run["state"], pipeline="demo")  # job_id None: the newest demo job
    text = _text(outputs)
    assert f"looking at {rerun['job_id']} (SUCCEEDED)" in text
    assert "normalize -> quality -> embed" in text  # pipeline order
    assert f"computed by {demo_run['record']['job_id']}" in text
    assert "matches its checkpoint" in text
    assert _images(outputs) == 3  # rows per stage, latency, throughput (the last two say "none")


@pytest.mark.slow
def test_notebook_on_a_failed_job_of_another_pipeline(demo_run: dict, failed_run: dict):
    outputs = execute(demo_run["state"], pipeline="flaky", job_id=failed_run["job_id"])
    text = _text(outputs)
    assert f"looking at {failed_run['job_id']} (FAILED)" in text
    assert "2 poison batches" in text
    assert _images(outputs) == 3
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "normalize" not in tables and "embed" not in tables  # flaky's stages only


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


@pytest.mark.slow
def test_notebook_shows_a_grouping_stages_partitions(tmp_path: Path):
    from tests.e2e.test_exact_dedup import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    pipeline = str(ROOT / "pipelines" / "exact_dedup.py")
    args = run_args(pipeline, tmp_path, corpus, "batch_rows=250", profile="local-cpu")
    record = run_json(*args, "--executor", "local")
    outputs = execute(str(tmp_path / "state"), pipeline="exact_dedup", job_id=record["job_id"])
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "dedup.reduce" in tables  # rows per partition, by reduce stage
    assert "declared_partitions" in tables and "skew" in tables  # the groupings table
