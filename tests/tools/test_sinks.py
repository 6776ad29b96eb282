"""`winnow export --format delta|iceberg|lance`: one commit per job, exactly once, incremental.

Two real runs of the demo pipeline (local executor) share the module: the
second after one of its three input files changed, so only that file's
batches have new artifacts. Each table is read back with its own library,
not through Winnow's sink code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute
import pytest

from tests import processes
from tests.conftest import inputs_args, run_cli, run_json
from tests.tools.test_export import cli, damage, make_job, numbers
from winnow import api
from winnow.errors import IntegrityError, UsageError
from winnow.storage.manifests import output_refs
from winnow.storage.state import State
from winnow.tools import sinks
from winnow.tools.export import export
from winnow.tools.sinks import PAUSE_ENV

FORMATS = ["delta", "iceberg", "lance"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Job ``first``, then job ``second`` after part-002.jsonl lost its first line."""
    import demo

    d = tmp_path_factory.mktemp("sinks")
    inputs = demo.sample_inputs(str(d / "in"), files=3, rows_per_file=600)
    where = ["--state", str(d / "state"), "--output", str(d / "out")]
    common = ["--profile", "local-cpu", "--executor", "local", "--set", "batch_rows=200"]
    first = run_json("run", "demo", *common, *where, *inputs_args(inputs))
    changed = Path(inputs[2])
    changed.write_text("".join(changed.read_text().splitlines(keepends=True)[1:]))
    second = run_json("run", "demo", *common, *where, *inputs_args(inputs))
    assert first["status"] == second["status"] == "SUCCEEDED"
    return {"dir": d, "state": State(str(d / "state")), "first": first, "second": second,
            "changed": changed.name}  # fmt: skip


def refs(record: dict[str, Any]) -> list[Any]:
    return output_refs(record)


def new_rows(runs: dict[str, Any]) -> int:
    """Rows of the second job's artifacts whose digests the first job's output lacks."""
    held = Counter(r.digest for r in refs(runs["first"]))
    rows = 0
    for ref in refs(runs["second"]):
        if held[ref.digest]:
            held[ref.digest] -= 1
        else:
            rows += ref.records
    return rows


def target(base: Path, fmt: str) -> str:
    return str(base / f"{fmt}-table")


def read_back(fmt: str, to: str) -> tuple[pa.Table, list[dict[str, str]]]:
    """The table's rows and Winnow's commit records, oldest first, through its library."""
    if fmt == "delta":
        from deltalake import DeltaTable

        dt = DeltaTable(to)
        history = [h for h in reversed(dt.history()) if "winnow.key" in h]
        return dt.to_pyarrow_table(), history
    if fmt == "lance":
        import lance

        ds = lance.dataset(to)
        props = [ds.read_transaction(v["version"]).transaction_properties for v in ds.versions()]
        return ds.to_table(), [p for p in props if "winnow.key" in p]
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "winnow", uri=f"sqlite:///{to}/catalog.db", warehouse=f"file://{to}/warehouse"
    )
    table = catalog.load_table("winnow.demo")
    summaries = [dict(s.summary.additional_properties) for s in table.snapshots()]
    return table.scan().to_arrow(), [s for s in summaries if "winnow.key" in s]


def exists(fmt: str, to: str) -> bool:
    if fmt == "iceberg":
        from pyiceberg.catalog.sql import SqlCatalog

        if not os.path.exists(f"{to}/catalog.db"):
            return False
        catalog = SqlCatalog(
            "winnow", uri=f"sqlite:///{to}/catalog.db", warehouse=f"file://{to}/warehouse"
        )
        return catalog.table_exists("winnow.demo")
    folder = Path(to) / ("_delta_log" if fmt == "delta" else "_versions")
    return folder.exists() and any(folder.iterdir())


def data_files(to: str) -> int:
    return sum(
        1 for _, _, names in os.walk(to) for n in names if n.endswith((".parquet", ".lance"))
    )


def by_id(table: pa.Table) -> pa.Table:
    """Rows in one order: by id, then every scalar column (a changed file repeats ids)."""
    keys = [c for c in table.column_names if pa.types.is_primitive(table[c].type)
            or pa.types.is_string(table[c].type)]  # fmt: skip
    keys = ["id", *(k for k in keys if k != "id")]
    table = table.select(sorted(table.column_names))
    return table.take(pa.compute.sort_indices(table.select(keys), [(k, "ascending") for k in keys]))


def same_rows(got: pa.Table, expected: pa.Table) -> bool:
    """Equal rows, whatever order the files came back in and however each format typed them."""
    want = by_id(expected)
    return by_id(got).cast(want.schema).equals(want)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_job_is_one_commit_once_and_a_later_run_adds_only_its_new_batches(
    fmt: str, runs: dict[str, Any], tmp_path: Path
):
    state, first, second = runs["state"], runs["first"], runs["second"]
    to, where = target(tmp_path, fmt), ["--state", str(runs["dir"] / "state")]
    code, out, err = cli("export", first["job_id"], "--to", to, "--format", fmt, *where, "--json")
    assert code == 0, err
    result = json.loads(out)
    expected = api.output_table(first)
    assert result["committed"] and result["rows"] == expected.num_rows == first["rows_out"]
    table, commits = read_back(fmt, to)
    assert same_rows(table, expected)
    assert len(commits) == 1 and commits[0]["winnow.job_id"] == first["job_id"]
    assert json.loads(commits[0]["winnow.artifacts"]) == [r.digest for r in refs(first)]
    assert commits[0]["winnow.key"] == result["key"]

    again = export(state, first["job_id"], to, fmt)  # the Python API
    assert not again["committed"] and again["version"] == result["version"]
    assert again["rows"] == 0 and again["table_rows"] == expected.num_rows
    assert len(read_back(fmt, to)[1]) == 1
    code, out, err = cli("export", first["job_id"], "--to", to, "--format", fmt, *where)
    said = " ".join(out.split())  # the console wraps long lines
    assert code == 0 and f"holds {first['job_id']}'s output already" in said, err
    assert "nothing added" in said and len(read_back(fmt, to)[1]) == 1

    later = export(state, second["job_id"], to, fmt)
    added = new_rows(runs)
    assert later["committed"] and later["rows"] == added
    assert 0 < added < second["rows_out"]
    new = [r for r in refs(second) if r.digest not in {f.digest for f in refs(first)}]
    manifest = json.loads(Path(second["manifest"]).read_text())
    sources = {e["artifact"]["digest"]: e["source"]["file"] for e in manifest["batches"]}
    assert {Path(sources[r.digest]).name for r in new} == {runs["changed"]}
    assert later["batches"] == len(new) and sum(r.records for r in new) == added
    table, commits = read_back(fmt, to)
    assert table.num_rows == expected.num_rows + added
    assert [c["winnow.job_id"] for c in commits] == [first["job_id"], second["job_id"]]
    assert json.loads(commits[1]["winnow.artifacts"]) == [r.digest for r in new]
    for job in (second, first):  # both are in the table: nothing more to add
        done = export(state, job["job_id"], to, fmt)
        assert not done["committed"] and done["table_rows"] == table.num_rows
    assert len(read_back(fmt, to)[1]) == 2


def export_killed_before_commit(runs: dict[str, Any], job: str, to: str, fmt: str, log: Path):
    """Run the export in a process that pauses when its data files are written; SIGKILL it."""
    flag = log.with_suffix(".ready")
    args = ["export", job, "--to", to, "--format", fmt, "--state", str(runs["dir"] / "state")]
    proc = processes.start_until(
        args, flag.exists, timeout=120, env={PAUSE_ENV: str(flag)}, log=log, session=False
    )
    # meanwhile a second export into the table stops: the paused one holds its lock
    with pytest.raises(UsageError, match=f"another export into .* is running \\(pid {proc.pid}\\)"):
        export(runs["state"], job, to, fmt)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkill_between_data_files_and_commit_leaves_the_previous_version(
    fmt: str, runs: dict[str, Any], tmp_path: Path
):
    state, first, second = runs["state"], runs["first"], runs["second"]
    to = target(tmp_path, fmt)
    export_killed_before_commit(runs, first["job_id"], to, fmt, tmp_path / "new")
    assert data_files(to) > 0  # the kill came after data files were written ...
    assert not exists(fmt, to)  # ... and before the commit that would make the table
    export(state, first["job_id"], to, fmt)
    before, commits = read_back(fmt, to)
    assert before.num_rows == first["rows_out"] and len(commits) == 1

    files = data_files(to)
    export_killed_before_commit(runs, second["job_id"], to, fmt, tmp_path / "append")
    assert data_files(to) > files
    table, commits = read_back(fmt, to)
    assert same_rows(table, before) and len(commits) == 1  # the old version, whole
    retry = export(state, second["job_id"], to, fmt)
    assert retry["committed"] and retry["rows"] == new_rows(runs)
    table, commits = read_back(fmt, to)
    assert table.num_rows == first["rows_out"] + new_rows(runs) and len(commits) == 2
    assert same_rows(table, pa.concat_tables([api.output_table(first), new_output(runs)]))


def new_output(runs: dict[str, Any]) -> pa.Table:
    from winnow.storage.artifacts import ArtifactStore

    old = Counter(r.digest for r in refs(runs["first"]))
    tables = []
    for ref in refs(runs["second"]):
        if old[ref.digest]:
            old[ref.digest] -= 1
            continue
        tables.append(ArtifactStore.for_uri(ref.uri).read(ref))
    return pa.concat_tables(tables)


def create_foreign(fmt: str, to: str, table: pa.Table) -> None:
    """A table written by its library directly, not by Winnow."""
    if fmt == "delta":
        from deltalake import write_deltalake

        write_deltalake(to, table)
    elif fmt == "lance":
        import lance

        lance.write_dataset(table, to)
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        os.makedirs(f"{to}/warehouse")
        catalog = SqlCatalog(
            "winnow", uri=f"sqlite:///{to}/catalog.db", warehouse=f"file://{to}/warehouse"
        )
        catalog.create_namespace("winnow")
        catalog.create_table("winnow.demo", schema=table.schema).append(table)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tables_with_other_rows_pipelines_or_columns_are_refused_untouched(
    fmt: str, runs: dict[str, Any], tmp_path: Path
):
    state, first = runs["state"], runs["first"]
    rows = api.output_table(first).slice(0, 5)
    cases = {
        "foreign": (rows, "rows were added, deleted or restored by another writer"),
        "columns": (pa.table({"id": pa.array([], pa.string())}), "other columns"),
    }
    for name, (table, message) in cases.items():
        to = target(tmp_path / name, fmt)
        create_foreign(fmt, to, table)
        before = read_back(fmt, to)
        with pytest.raises(UsageError, match=message):
            export(state, first["job_id"], to, fmt)
        after = read_back(fmt, to)
        assert after[0].equals(before[0]) and after[1] == before[1] == []

    to = target(tmp_path / "demo", fmt)
    export(state, first["job_id"], to, fmt)
    before = read_back(fmt, to)
    other = make_job(str(tmp_path / "other"), numbers(2, 10))
    kwargs = {"table": "winnow.demo"} if fmt == "iceberg" else {}
    with pytest.raises(UsageError, match="holds exports of pipeline 'demo', not 'synthetic'"):
        export(other["state"], other["job_id"], to, fmt, **kwargs)
    after = read_back(fmt, to)
    assert after[0].equals(before[0]) and after[1] == before[1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_target_that_cannot_be_a_table_is_a_usage_error_leaving_nothing(
    fmt: str, runs: dict[str, Any], tmp_path: Path
):
    # A file as --to reached each library, which raised a bare OSError (iceberg left its lock)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match=r"is a file; a --format .* writes a table's folder"):
        export(runs["state"], runs["first"]["job_id"], str(afile), fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and afile.read_text() == "x"
    if fmt == "iceberg":  # pyiceberg's SQL catalog nests no namespaces; "" is no table name
        for name in ("a.b.c", ""):
            with pytest.raises(UsageError, match="--table"):
                export(runs["state"], runs["first"]["job_id"], str(tmp_path / "t"), fmt, table=name)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize(
    ("fmt", "modules", "extra"),
    [
        ("delta", ["deltalake"], "delta"),
        ("iceberg", ["pyiceberg", "pyiceberg.catalog"], "iceberg"),
        ("lance", ["lance"], "lance"),
    ],
)
def test_a_missing_extra_is_one_line_naming_its_install_command(
    fmt: str, modules: list[str], extra: str, runs: dict[str, Any], tmp_path: Path, monkeypatch
):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # an import of it fails as if absent
    to = str(tmp_path / "t")
    code, _, err = cli("export", runs["first"]["job_id"], "--to", to, "--format", fmt,
                       "--state", str(runs["dir"] / "state"))  # fmt: skip
    assert code == 2, err
    assert f"--format {fmt} needs the '{extra}' extra" in err
    assert f"uv sync --extra {extra}" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # not even the lock beside it


@pytest.mark.slow
def test_iceberg_catalog_configured_the_pyiceberg_way(runs: dict[str, Any], tmp_path: Path):
    """--catalog NAME: pyiceberg reads the catalog from PYICEBERG_CATALOG__NAME__* (or its yaml)."""
    (tmp_path / "warehouse").mkdir()
    env = {
        "PYICEBERG_CATALOG__LAKE__TYPE": "sql",
        "PYICEBERG_CATALOG__LAKE__URI": f"sqlite:///{tmp_path}/lake.db",
        "PYICEBERG_CATALOG__LAKE__WAREHOUSE": f"file://{tmp_path}/warehouse",
    }
    job, where = runs["first"]["job_id"], ["--state", str(runs["dir"] / "state")]
    args = ["export", job, "--format", "iceberg", "--catalog", "lake", "--table", "curated.docs"]
    for committed in (True, False):
        result = run_json(*args, *where, env=env)
        assert result["committed"] is committed and result["table"].endswith("in catalog lake")
        assert result["table_rows"] == runs["first"]["rows_out"]
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("lake", uri=env["PYICEBERG_CATALOG__LAKE__URI"],
                         warehouse=env["PYICEBERG_CATALOG__LAKE__WAREHOUSE"])  # fmt: skip
    table = catalog.load_table("curated.docs")
    assert table.scan().to_arrow().num_rows == runs["first"]["rows_out"]
    assert [s.summary["winnow.job_id"] for s in table.snapshots()] == [job]
    proc = run_cli(*args[:-4], "--catalog", "nowhere", *where)
    assert proc.returncode == 2 and "--catalog 'nowhere'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_damaged_artifact_or_lost_rows_commit_nothing_and_empty_outputs_are_clear(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = make_job(str(tmp_path / "a"), numbers(3, 50, seed=1))
    to = target(tmp_path, fmt)
    kwargs = {"table": "winnow.demo"} if fmt == "iceberg" else {}  # read_back's table
    export(first["state"], first["job_id"], to, fmt, **kwargs)
    before = read_back(fmt, to)
    second = make_job(str(tmp_path / "b"), numbers(4, 50, seed=2))
    bad = damage(second, 2)  # after two batches' rows are written
    with pytest.raises(IntegrityError, match=bad.name):
        export(second["state"], second["job_id"], to, fmt, **kwargs)
    after = read_back(fmt, to)
    assert after[0].equals(before[0]) and after[1] == before[1] and len(after[1]) == 1
    real = sinks.conform  # a writer that loses a row of each batch: caught before the commit
    monkeypatch.setattr(sinks, "conform", lambda t, schema: real(t, schema).slice(1))
    third = make_job(str(tmp_path / "c"), numbers(2, 50, seed=3))
    with pytest.raises(IntegrityError, match="streamed 100 rows and staged files of 98"):
        export(third["state"], third["job_id"], to, fmt, **kwargs)
    monkeypatch.undo()
    after = read_back(fmt, to)
    assert after[0].equals(before[0]) and after[1] == before[1]

    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    empty = make_job(str(tmp_path / "e"), [pa.RecordBatch.from_pylist([], schema=schema)] * 2)
    to = target(tmp_path / "empty", fmt)
    result = export(empty["state"], empty["job_id"], to, fmt, **kwargs)
    assert result["table_rows"] == 0 and exists(fmt, to)
    assert read_back(fmt, to)[0].num_rows == 0
    assert read_back(fmt, to)[0].schema.names == ["id", "text"]
    nothing = make_job(str(tmp_path / "n"), [])
    with pytest.raises(UsageError, match="no output batches"):
        export(nothing["state"], nothing["job_id"], target(tmp_path / "none", fmt), fmt)
    assert not exists(fmt, target(tmp_path / "none", fmt))
