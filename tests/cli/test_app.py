"""Bad invocations: a clear one-paragraph error, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, run_json


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


def base(tmp_path: Path) -> list[str]:
    return ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]


def test_unknown_pipeline(tmp_path: Path):
    proc = run_cli("run", "nosuch", *base(tmp_path))
    assert proc.returncode == 2
    assert "no pipeline named 'nosuch'" in proc.stderr and "demo" in proc.stderr
    assert_nothing_written(tmp_path)


def test_bad_profile_key(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_rows = 10\nretries = 3\n")
    proc = run_cli("run", "demo", "--profile", str(bad), *base(tmp_path))
    assert proc.returncode == 2
    assert "unknown key 'retries'" in proc.stderr and str(bad) in proc.stderr.replace("\n", "")
    assert_nothing_written(tmp_path)


def test_missing_input(tmp_path: Path):
    proc = run_cli(
        "run",
        "demo",
        "--profile",
        "local-cpu",
        "--input",
        str(tmp_path / "missing.jsonl"),
        *base(tmp_path),
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert_nothing_written(tmp_path)


def test_protocol_without_its_extra_names_the_install(tmp_path: Path):
    proc = run_cli("plan", "demo", "--input", "gcs://bucket/data/*.jsonl", *base(tmp_path))
    assert proc.returncode == 2
    assert "pip install 'winnow[gcs]'" in proc.stderr.replace("\n", "")
    assert_nothing_written(tmp_path)


def test_bad_set_value(tmp_path: Path):
    proc = run_cli("plan", "demo", "--set", "quality.min_words=many", *base(tmp_path))
    assert proc.returncode == 2 and "quality.min_words" in proc.stderr
    proc = run_cli("plan", "demo", "--set", "quality.nope=1", *base(tmp_path))
    assert proc.returncode == 2 and "no parameter 'nope'" in proc.stderr
    assert_nothing_written(tmp_path)


def test_unknown_state_version_names_the_migration(tmp_path: Path, demo_inputs):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "VERSION").write_text("state/v9\n")
    proc = run_cli("run", "demo", "--input", demo_inputs[0], *base(tmp_path))
    assert proc.returncode == 2 and "migrate-state" in proc.stderr.replace("\n", " ")


@pytest.mark.parametrize("command", ["run", "plan", "verify", "jobs"])
def test_help_documents_every_command(command: str):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout


def test_every_command_and_option_has_help_text():
    import click

    from winnow.cli.app import cli

    def walk(cmd: click.Command, path: str):
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), f"{path} {name}")  # type: ignore[arg-type]
        else:
            yield path, cmd

    missing = []
    for path, cmd in walk(cli, "winnow"):
        missing += [path] if not cmd.help else []
        missing += [
            f"{path} {p.opts[0]}"
            for p in cmd.params
            if isinstance(p, click.Option) and not p.hidden and not p.help
        ]
    assert missing == []


def test_commands_from_other_modules_load_when_named():
    """Every lazily loaded command resolves to itself; `run` loads none of them."""
    import click

    from winnow.cli import app as cli

    ctx = click.Context(cli.cli)
    listed = cli.cli.list_commands(ctx)
    assert {"run", "plan", "retry", "jobs", *cli.LAZY_COMMANDS} <= set(listed)
    for name in cli.LAZY_COMMANDS:
        command = cli.cli.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    gateway = cli.cli.get_command(ctx, "gateway")
    assert isinstance(gateway, click.Group) and "snapshot" in gateway.list_commands(ctx)
    probe = "import sys, winnow.cli; print(sorted(m for m in sys.modules if 'gateway' in m))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unreachable_cluster_fails_fast_and_writes_no_job(tmp_path: Path, demo_inputs):
    """Ray would retry an absent GCS for minutes; run exits 2 at once, no job record."""
    port = free_port()  # nothing listens there
    for command in ("run", "plan"):
        proc = run_cli(
            command, "demo", "--input", demo_inputs[0], "--address", f"127.0.0.1:{port}",
            *base(tmp_path), timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "nothing answers there" in proc.stderr and "loopback.py up" in proc.stderr
        assert not (tmp_path / "state" / "jobs").exists() or not any(
            (tmp_path / "state" / "jobs").iterdir()
        )


def test_submit_needs_a_jobs_api_address(tmp_path: Path, demo_inputs):
    env = {"RAY_ADDRESS": ""}
    proc = run_cli("submit", "demo", "--input", demo_inputs[0], *base(tmp_path), env=env)
    assert proc.returncode == 2 and "--address http://HEAD:8265" in proc.stderr
    proc = run_cli(
        "submit", "demo", "--input", demo_inputs[0], "--address", "ray://127.0.0.1:10001",
        *base(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2 and "not a Jobs API address" in proc.stderr
    assert_nothing_written(tmp_path)


def test_retry_with_nothing_failed_says_so_and_records_no_job(demo_job: dict):
    jobs_before = run_json("jobs", *demo_job["state"])["jobs"]
    out = run_json("retry", "--failed", *demo_job["state"])
    assert out["status"] == "NOTHING_TO_RETRY" and "nothing to retry" in out["message"]
    plain = run_cli("retry", "--failed", *demo_job["state"])
    assert plain.returncode == 0 and "nothing to retry" in plain.stdout
    assert run_json("jobs", *demo_job["state"])["jobs"] == jobs_before


def test_run_with_the_local_executor_needs_no_ray(tmp_path: Path, demo_inputs):
    """`winnow run --executor local`: the same job in this process, Ray never imported."""
    code = (
        "import json, sys\n"
        "from winnow.cli.app import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    print(json.dumps({'ray_imported': 'ray' in sys.modules}), file=sys.stderr)\n"
    )
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    args = ["run", "demo", "--profile", "local-cpu", "--set", "batch_rows=2000", *where]
    args += ["--input", demo_inputs[0], "--executor", "local", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "SUCCEEDED" and record["rows_out"] > 0
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"ray_imported": False}
    again = run_json(*args[:-1])  # the same run on Ray skips everything the local one did
    assert {c["run"] for c in again["counts"].values()} == {0}


def test_an_all_skipped_rerun_imports_neither_ray_nor_pandas(tmp_path: Path, demo_inputs):
    """The rerun a user makes most often pays for no heavy import (each costs 0.3-1 s).

    Nor for the lighter ones only a run with work needs: rich (a --json run
    prints no bars), Parquet's reader and writer (row counts are cached).
    """
    code = (
        "import json, sys\n"
        "from winnow.cli.app import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    unused = ('ray', 'pandas', 'matplotlib', 'rich', 'pyarrow.parquet')\n"
        "    heavy = sorted(m for m in unused if m in sys.modules)\n"
        "    print(json.dumps({'imported': heavy}), file=sys.stderr)\n"
    )
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    args = ["run", "demo", "--profile", "local-cpu", "--set", "batch_rows=2000", *where]
    args += ["--input", demo_inputs[0], "--json"]
    assert run_json(*args[:-1], "--executor", "local")["status"] == "SUCCEEDED"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["skipped_fraction"] == 1.0
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"imported": []}


TINY_WITH_SAMPLES = """
import os
import pyarrow as pa
from winnow import Pipeline, Stage


class Keep(Stage):
    name = "keep"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch


def sample_inputs(directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "a.jsonl")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write('{"id": 1}\\n')
    return [path]


pipeline = Pipeline(name="tiny", stages=[Keep()], sample_inputs=sample_inputs)
"""


def test_writing_sample_inputs_is_announced_once(tmp_path: Path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "tiny.py").write_text(TINY_WITH_SAMPLES)
    first = run_cli("plan", "tiny", "--state", str(tmp_path / "state"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "writing tiny's sample inputs to .winnow/samples/tiny (first run only)" in first.stderr
    again = run_cli("plan", "tiny", "--state", str(tmp_path / "state"), cwd=tmp_path)
    assert again.returncode == 0 and "sample inputs" not in again.stderr


def test_plan_sizes_a_grouping_stages_reduce_side_on_its_own(tmp_path: Path):
    """The reduce side runs in a later segment: its actors do not add to the map side's."""
    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"w {i}"}) + "\n" for i in range(20)))
    args = ["plan", "fuzzy_dedup", "--profile", "local-cpu", "--input", str(source)]
    plan = run_json(*args, "--state", str(tmp_path / "state"), "--set", "ray_num_cpus=2")
    assert plan["capacity"]["problems"] == []
    every = {"minhash", "lsh.map", "lsh.reduce", "components.map", "components.reduce", "keep"}
    assert set(plan["capacity"]["actors"]) == every
