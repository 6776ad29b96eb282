"""``winnow report`` on every kind of job, in one state shared by three pipelines.

The state holds a demo run and its all-skipped rerun, a flaky run whose
batches fail for good, a flaky run on an empty file, and a paced run (paced
and flaky both have a stage named ``upper``); flaky's and paced's inputs each
carry one malformed line with a marker, so a report that showed another
pipeline's quarantine would show the other's marker; last, a paced run whose
stage setup fails. Every run uses the local
executor on a few hundred rows: the module takes seconds.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import inputs_args, run_cli, run_json
from winnow.api import open_state
from winnow.tools import plots
from winnow.tools.explore import batch_records
from winnow.tools.report import SECTIONS
from winnow.tools.status import status

FLAKY = "tests/pipelines/flaky.py"
PACED = "tests/pipelines/paced.py"


def _jsonl(path: Path, marker: str, rows: int = 100) -> Path:
    """``rows`` records (ids 1..rows) after one malformed line holding ``marker``."""
    lines = [f"not json {marker}"] + [
        json.dumps({"id": i, "text": f"row {i}"}) for i in range(1, rows + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_inputs: list[str]) -> dict:
    d = tmp_path_factory.mktemp("report")
    where = ["--state", str(d / "state"), "--output", str(d / "out")]
    local = ["--profile", "local-cpu", "--executor", "local", *where]
    demo = ["run", "demo", *local, "--set", "batch_rows=1500", *inputs_args(demo_inputs)]
    computed = run_json(*demo)
    skipped = run_json(*demo)
    (d / "marks").mkdir()
    # ids 30, 60 and 90 fail every try: batches [25,50), [50,75) and [75,100) are poison
    failing = ["flaky.fail_mod=30", "flaky.fail_times=9", f"flaky.marks={d / 'marks'}"]
    failed = run_json(
        "run",
        FLAKY,
        *local,
        *[a for s in ["batch_rows=25", *failing] for a in ("--set", s)],
        "--input",
        str(_jsonl(d / "flaky.jsonl", "FLAKY-BAD")),
        expect=1,
    )
    (d / "empty.jsonl").write_text("")
    empty = run_json("run", FLAKY, *local, "--input", str(d / "empty.jsonl"))
    paced = run_json(
        "run",
        PACED,
        *local,
        "--set",
        "batch_rows=25",
        "--input",
        str(_jsonl(d / "paced.jsonl", "PACED-BAD")),
    )
    # a stage whose setup() fails stops the job before it counts anything
    setup = run_cli(
        "run",
        PACED,
        *local,
        "--set",
        "upper.setup_error=no model here",
        "--input",
        str(d / "paced.jsonl"),
    )
    assert setup.returncode == 1, setup.stderr
    [stopped] = [j for j in open_state(str(d / "state")).list_jobs() if j.get("error")]
    assert skipped["skipped_fraction"] == 1.0 and failed["status"] == "FAILED"
    assert empty["batches"] == 0 and paced["status"] == "SUCCEEDED"
    return {
        "dir": d,
        "state": str(d / "state"),
        "computed": computed,
        "skipped": skipped,
        "failed": failed,
        "empty": empty,
        "paced": paced,
        "stopped": stopped,
    }


class Page(HTMLParser):
    """A report page by section: its text, images, table rows and red cells."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.order: list[str] = []
        self.text: dict[str, str] = {}
        self.images: dict[str, int] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.bad: dict[str, list[str]] = {}
        self.heading = ""
        self._at = ""
        self._cell: list[str] | None = None
        self._cell_bad = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._at = a.get("id") or ""
            self.order.append(self._at)
            self.text[self._at], self.images[self._at] = "", 0
            self.rows[self._at], self.bad[self._at] = [], []
        elif tag == "img":
            assert str(a.get("src")).startswith("data:image/png;base64,")
            self.images[self._at] += 1
        elif tag == "tr" and self._at:
            self.rows[self._at].append([])
        elif tag == "td":
            self._cell, self._cell_bad = [], "bad" in (a.get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            cell = "".join(self._cell).strip()
            if self._at:
                self.rows[self._at][-1].append(cell)
                if self._cell_bad:
                    self.bad[self._at].append(cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if not self._at:
            self.heading += data
        else:
            self.text[self._at] += data
        if self._cell is not None:
            self._cell.append(data)

    def column(self, section: str, i: int = 0) -> list[str]:
        return [r[i] for r in self.rows[section] if r]


def report(runs: dict, which: str, tmp_path: Path) -> Page:
    out = tmp_path / f"{which}.html"
    proc = run_cli("report", runs[which]["job_id"], "--to", str(out), "--state", runs["state"])
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert "<script" not in page and "<link" not in page  # self-contained: nothing to fetch
    parsed = Page(page)
    assert parsed.order == list(SECTIONS)
    assert runs[which]["job_id"] in parsed.heading
    return parsed


def test_an_all_skipped_rerun_names_the_job_that_computed_its_output(runs: dict, tmp_path: Path):
    page = report(runs, "skipped", tmp_path)
    first, rerun = runs["computed"]["job_id"], runs["skipped"]["job_id"]
    assert "computed nothing" in page.text["summary"] and first in page.text["summary"]
    # the output's batches, all committed by the first run
    [(job, status, _, work)] = page.rows["computed-by"][1:]
    assert (job, status) == (first, "SUCCEEDED") and rerun not in page.text["computed-by"]
    assert work == "normalize 3, quality 3, embed 3"
    assert page.column("stages") == ["normalize", "quality", "embed"]  # pipeline order
    assert page.column("state-delta", 3) == ["no change"] * 3
    assert page.column("state-delta", 1) == ["3 succeeded"] * 3
    assert "{" not in page.text["state-delta"]  # words, not a Python dict
    assert page.images == {**dict.fromkeys(SECTIONS, 0), "rows": 1}
    assert "computed no batch" in page.text["latency"] + page.text["throughput"]
    # demo's own bad records, and no other pipeline's
    quarantine = page.text["quarantine"]
    assert f"{runs['skipped']['bad_records']} bad record(s)" in quarantine
    assert "FLAKY-BAD" not in quarantine and "PACED-BAD" not in quarantine
    assert "matches the checkpoint" in page.text["artifact-check"]
    assert "DOES NOT" not in page.text["artifact-check"]


def test_a_failed_job_shows_its_failures_and_never_draws_them(runs: dict, tmp_path: Path):
    page = report(runs, "failed", tmp_path)
    assert "FAILED" in page.heading
    assert "3 batch(es) failed for good" in page.text["summary"]
    assert "75" in page.bad["summary"]  # rows in failed batches, in red
    poison = [r for r in page.rows["failures"] if r and r[0] == "flaky"]
    inputs = sorted(r[2].rsplit(" rows ", 1)[1] for r in poison)
    assert inputs == ["25-50", "50-75", "75-100"] and {r[3] for r in poison} == {"3"}
    assert page.column("stages") == ["flaky", "upper"]
    assert page.bad["stages"] == ["3"]  # the failed count, in red
    assert page.images["latency"] == page.images["throughput"] == 1
    assert "3 failed batch attempt(s) are not drawn" in page.text["throughput"]
    assert "FLAKY-BAD" in page.text["quarantine"] and "PACED-BAD" not in page.text["quarantine"]

    # the throughput picture holds the committed batches' rows only: 24 + 1 of flaky's
    state = open_state(runs["state"])
    records = batch_records(state, runs["failed"]["job_id"])
    assert sorted(records.column("status").to_pylist()).count("FAILED") == 3
    fig = plots.throughput(records)
    drawn = {}
    for line in fig.axes[0].get_lines():
        x, y = line.get_xdata(), line.get_ydata()
        drawn[line.get_label()] = round(sum(y) * (x[1] - x[0]))
    assert drawn == {"flaky": 25, "upper": 25}


def test_an_empty_job_says_so_and_shows_nothing_of_other_jobs(runs: dict, tmp_path: Path):
    page = report(runs, "empty", tmp_path)
    assert "no input rows" in page.text["summary"]
    assert sum(page.images.values()) == 0
    assert "No committed batch" in page.text["computed-by"]
    assert "No quarantined records" in page.text["quarantine"]
    assert "FLAKY-BAD" not in page.text["quarantine"]  # the earlier flaky job's input
    assert "no artifacts" in page.text["artifact-check"]


def test_a_shared_stage_name_brings_no_other_pipeline_into_a_report(runs: dict, tmp_path: Path):
    page = report(runs, "paced", tmp_path)
    [(job, _, _, work)] = page.rows["computed-by"][1:]
    # 5 batches of 25 rows (101 lines); flaky's `upper` records are not paced's
    assert job.startswith(runs["paced"]["job_id"]) and work == "pace 5, upper 5"
    assert "PACED-BAD" in page.text["quarantine"] and "FLAKY-BAD" not in page.text["quarantine"]


def test_a_job_stopped_before_counting_shows_its_error_and_no_made_up_numbers(
    runs: dict, tmp_path: Path
):
    page = report(runs, "stopped", tmp_path)
    assert "FAILED" in page.heading and "no model here" in page.text["summary"]
    assert "no model here" in page.text["failures"]
    for name in ("stages", "rows", "latency", "throughput"):
        assert "before it counted its batches" in page.text[name], name
    assert page.column("state-delta", 2) == ["not recorded"] * 2
    assert sum(page.images.values()) == 0 and "No output manifest" in page.text["artifact-check"]


def test_status_lists_stages_in_pipeline_order(runs: dict):
    stages = list(status(open_state(runs["state"]))["stages"])
    # newest job's pipeline first (paced), then flaky's, then demo's
    assert stages == ["pace", "upper", "flaky", "normalize", "quality", "embed"]
