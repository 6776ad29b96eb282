"""Reruns follow the code: an edit reruns what it touches, `plan` says why, and
`--rerun` / `winnow invalidate` force what the user knows is stale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from winnow import api
from winnow.request import RunRequest

pytestmark = pytest.mark.slow

PIPELINE = """
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Stage

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


def shout(column):
    return pc.utf8_upper(column)


@dataclass
class Case(Stage):
    name = "case"
    version = "1"

    def process(self, batch):
        i = batch.schema.get_field_index("text")
        return batch.set_column(i, "text", shout(batch.column(i)))


@dataclass
class Tag(Stage):
    name = "tag"
    label: str = "x"

    def process(self, batch):
        return batch.append_column("tag", pa.array([self.label] * batch.num_rows))


pipeline = Pipeline(name="codeaware", stages=[Case(), Tag()], schema=SCHEMA)
"""


@pytest.fixture
def project(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"Row {i}"}) + "\n" for i in range(40)))
    pipe = tmp_path / "codeaware.py"
    pipe.write_text(PIPELINE)
    return {
        "pipe": str(pipe),
        "input": str(data),
        "out": str(tmp_path / "out"),
        "state": str(tmp_path / "state"),
    }


def session(p: dict[str, str], pipe: str | None = None, sets=(), rerun=None):
    return api.resolve_session(
        RunRequest(
            pipe or p["pipe"],
            "local-cpu",
            [p["input"]],
            p["out"],
            p["state"],
            ["batch_rows=10", *sets],
            rerun=rerun,
        )
    )


def reasons(p: dict[str, str], **kwargs) -> dict[str, dict[str, int]]:
    plan = api.plan(session(p, **kwargs))
    return {s.name: dict(s.reasons) for s in plan.stages}


def texts(record: dict) -> list[str]:
    return api.output_table(record).column("text").to_pylist()


def test_a_code_edit_reruns_its_stage_and_plan_names_the_cause(local_ray, project):
    first = api.execute(session(project))
    assert first["status"] == "SUCCEEDED" and texts(first)[0] == "ROW 0"

    # Edit the helper the stage calls, not the stage, and leave `version` alone.
    Path(project["pipe"]).write_text(PIPELINE.replace("utf8_upper", "utf8_lower"))
    assert reasons(project) == {
        "case": {"code of stage case changed": 4},
        "tag": {"upstream stage case changed": 4},
    }
    second = api.execute(session(project))
    assert second["counts"]["case"]["run"] == 4 and second["counts"]["tag"]["run"] == 4
    assert texts(second)[0] == "row 0"  # never the stale upper-case output

    # Moving the pipeline file elsewhere under another name changes nothing.
    moved = Path(project["pipe"]).with_name("renamed_pipeline.py")
    shutil.copy(project["pipe"], moved)
    assert reasons(project, pipe=str(moved)) == {
        "case": {"committed": 4},
        "tag": {"committed": 4},
    }


def test_plan_names_parameters_batch_rows_and_input_changes(local_ray, project):
    api.execute(session(project))
    assert reasons(project, sets=["tag.label=y"]) == {
        "case": {"committed": 4},
        "tag": {"tag parameter label 'x' -> 'y'": 4},
    }
    assert reasons(project, sets=["batch_rows=20"])["case"] == {
        "batch_rows changed 10 -> 20 (batch boundaries moved)": 2
    }
    with open(project["input"], "a") as fh:
        fh.write(json.dumps({"id": 40, "text": "Row 40"}) + "\n")
    assert reasons(project) == {
        "case": {"input file changed": 5},
        "tag": {"input file changed": 5},
    }


def test_rerun_and_invalidate_force_a_stage_and_those_after_it(local_ray, project):
    api.execute(session(project))
    plan = api.plan(session(project, rerun="tag"))
    assert [dict(s.counts) for s in plan.stages] == [{"skip": 4}, {"run": 4}]
    forced = api.execute(session(project, rerun="tag"))
    assert forced["counts"]["case"]["skipped"] == 4 and forced["counts"]["tag"]["run"] == 4

    proc = run_cli("invalidate", "case", "--version", "1", "--state", project["state"], "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["invalidated"] == 4
    assert reasons(project) == {
        "case": {"invalidated (winnow invalidate)": 4},
        "tag": {"upstream stage case invalidated": 4},
    }
    after = api.execute(session(project))
    assert after["counts"]["case"]["run"] == 4 and after["counts"]["tag"]["run"] == 4
    assert reasons(project) == {"case": {"committed": 4}, "tag": {"committed": 4}}

    # A version nothing was made with selects nothing; a bad stage name is a clear error.
    proc = run_cli("invalidate", "case", "--version", "7", "--state", project["state"], "--json")
    assert json.loads(proc.stdout)["invalidated"] == 0
    proc = run_cli("invalidate", "nope", "--all", "--state", project["state"])
    assert proc.returncode == 2 and "no checkpoints of a stage 'nope'" in proc.stderr
    proc = run_cli("run", project["pipe"], "--rerun", "nope", "--state", project["state"])
    assert proc.returncode == 2 and "its stages: case, tag" in proc.stderr
