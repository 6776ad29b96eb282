"""`winnow export` commits like an artifact: temporary name, verify, publish.

The demo job is a real run (local Ray); the other jobs are written through the
real artifact store, state and manifest layout (`make_job`), so a test can
damage one artifact, or make a job big enough to kill mid-export, in a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import processes
from tests.conftest import run_json
from tests.s3_fixtures import s3_options
from winnow import api
from winnow.cli import main
from winnow.errors import IntegrityError
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.fs import join, resolve, write_atomic
from winnow.storage.state import State
from winnow.tools.export import export

TEMP = re.compile(r"\..+\.winnow-tmp-[0-9a-f]{16}")


def make_job(base: str, batches: list[pa.RecordBatch], options: dict | None = None) -> dict:
    """A finished job whose output is ``batches``: artifacts, manifest and job record."""
    store = ArtifactStore(join(base, "out", "artifacts"), options)
    entries = []
    for n, batch in enumerate(batches):
        ref = store.put(batch, "parquet")
        source = {"file": "synthetic", "start": n, "stop": n + 1}
        entries.append({"batch": str(n), "key": str(n), "source": source,
                        "artifact": ref.to_dict(), "rows": ref.records})  # fmt: skip
    job_id = f"synthetic-{len(batches)}-{sum(b.num_rows for b in batches)}"
    fs, out = resolve(join(base, "out"), options)
    manifest = join(out, "manifests", "synthetic", f"{job_id}.json")
    body = {"job_id": job_id, "pipeline": "synthetic", "stage": "last", "batches": entries}
    write_atomic(fs, manifest, json.dumps(body).encode())
    state = State(join(base, "state"), options)
    state.prepare()
    record = {
        "job_id": job_id,
        "status": "SUCCEEDED",
        "state_url": state.display(),
        "output_url": join(base, "out"),
        "manifest": fs.unstrip_protocol(manifest) if "://" in base else manifest,
    }
    state.write_job(record)
    return {"state": state, "record": record, "job_id": job_id}


def numbers(n: int, rows: int, seed: int = 0) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    return [
        pa.record_batch({"id": np.arange(i * rows, (i + 1) * rows), "x": rng.random(rows)})
        for i in range(n)
    ]


def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (``winnow.cli.app``); exit code, stdout, stderr."""

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_and_folder_exports_equal_the_output_and_carry_digests(demo_job: dict):
    job, out = demo_job["record"]["job_id"], demo_job["dir"] / "exports"
    expected = api.output_table(demo_job["record"])
    code, printed, err = cli(
        "export", job, "--to", str(out / "all.parquet"), *demo_job["state"], "--json"
    )
    assert code == 0, err
    result = json.loads(printed)
    data = (out / "all.parquet").read_bytes()
    assert pq.read_table(out / "all.parquet").equals(expected)
    assert result["rows"] == expected.num_rows and result["parts"][0]["sha256"] == sha(data)

    code, printed, err = cli(
        "export", job, "--to", str(out / "parts"), *demo_job["state"], "--json"
    )
    assert code == 0, err
    result = json.loads(printed)
    files = listing(out / "parts")
    marker = json.loads(files.pop("_winnow_export.json"))
    assert sorted(files) == [p["name"] for p in marker["parts"]]
    assert len(files) == demo_job["record"]["batches"] == len(result["files"])
    assert marker["job_id"] == job and marker["rows"] == expected.num_rows
    for part in marker["parts"]:
        assert sha(files[part["name"]]) == part["sha256"]
        assert pq.read_metadata(out / "parts" / part["name"]).num_rows == part["rows"]
    assert pa.concat_tables(pq.read_table(out / "parts" / n) for n in sorted(files)).equals(
        expected
    )
    assert sorted(os.listdir(out)) == ["all.parquet", "parts"]  # no temporaries left


def test_target_inside_state_manifests_or_artifacts_is_refused(demo_job: dict):
    job, d = demo_job["record"]["job_id"], demo_job["dir"]
    day = next((d / "state" / "events").glob("*.jsonl"))
    journal = day.read_bytes()
    manifests = d / "out" / "manifests"
    for target, named in (
        (day, "state root"),
        (manifests / "demo" / "x.parquet", "manifests folder"),
        (d / "out" / "artifacts" / "export", "artifact store"),
        (d / "out" / "artifacts" / ".." / "artifacts" / "sha256" / "x.jsonl", "artifact store"),
        (d / "out", "artifact store"),  # a folder holding the store
    ):
        code, _, err = cli("export", job, "--to", str(target), *demo_job["state"])
        assert code == 2 and named in err and "Fix" in err, (target, err)
    assert day.read_bytes() == journal
    assert not (manifests / "demo" / "x.parquet").exists()
    assert not (d / "out" / "artifacts" / "export").exists()


def test_folder_that_is_not_an_export_is_refused(demo_job: dict, tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, _, err = cli("export", demo_job["record"]["job_id"], "--to", str(tmp_path / "mine"),
                       *demo_job["state"])  # fmt: skip
    assert code == 2 and "not a previous Winnow export" in err and "Fix" in err
    assert listing(tmp_path / "mine") == {"notes.txt": b"keep me"}
    (tmp_path / "empty").mkdir()  # an empty folder is taken
    code, printed, err = cli("export", demo_job["record"]["job_id"], "--to", str(tmp_path / "empty"),
                             *demo_job["state"])  # fmt: skip
    assert code == 0 and "verified" in printed, err
    assert "_winnow_export.json" in os.listdir(tmp_path / "empty")


def test_zero_row_jobs_export_readable_empty_datasets(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    record = run_json("run", "demo", "--profile", "local-cpu", "--input", str(empty), *where)
    assert record["batches"] == 0
    state = State(str(tmp_path / "state"))
    export(state, record["job_id"], str(tmp_path / "e" / "none.parquet"))
    assert pq.read_table(tmp_path / "e" / "none.parquet").num_rows == 0
    export(state, record["job_id"], str(tmp_path / "e" / "none.jsonl"))
    assert (tmp_path / "e" / "none.jsonl").read_bytes() == b""
    result = export(state, record["job_id"], str(tmp_path / "e" / "none"))
    assert os.listdir(tmp_path / "e" / "none") == ["_winnow_export.json"]
    assert result["files"] == [] and result["rows"] == 0

    # every row filtered: 0-row artifacts; the file keeps their schema
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    job = make_job(str(tmp_path / "filtered"), [pa.RecordBatch.from_pylist([], schema=schema)] * 2)
    export(job["state"], job["job_id"], str(tmp_path / "e" / "filtered.parquet"))
    table = pq.read_table(tmp_path / "e" / "filtered.parquet")
    assert table.num_rows == 0 and table.schema.equals(schema)
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "filtered.parquet", "none", "none.jsonl", "none.parquet"
    ]  # fmt: skip


def damage(job: dict, index: int) -> Path:
    """Flip one byte in the middle of the job's ``index``-th artifact, on disk."""
    manifest = json.loads(Path(job["record"]["manifest"]).read_text())
    path = Path(manifest["batches"][index]["artifact"]["uri"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    return path


def test_damaged_artifact_fails_the_export_and_publishes_nothing(tmp_path: Path):
    job = make_job(str(tmp_path / "j"), numbers(6, 2_000))
    bad = damage(job, 4)  # after four parts are written
    targets = tmp_path / "exports"
    for name in ("all.parquet", "all.jsonl", "folder"):
        with pytest.raises(IntegrityError) as raised:
            export(job["state"], job["job_id"], str(targets / name))
        assert bad.name in str(raised.value) and "winnow verify --full" in str(raised.value)
    assert not targets.exists() or os.listdir(targets) == []
    code, _, err = cli("export", job["job_id"], "--to", str(targets / "x.parquet"),
                       "--state", str(tmp_path / "j" / "state"))  # fmt: skip
    assert code == 1 and bad.name in err


def test_failed_reexport_leaves_the_previous_export_intact(tmp_path: Path, monkeypatch):
    first = make_job(str(tmp_path / "a"), numbers(3, 1_000, seed=1))
    second = make_job(str(tmp_path / "b"), numbers(5, 1_000, seed=2))
    target = tmp_path / "exports" / "data"
    export(first["state"], first["job_id"], str(target))
    export(first["state"], first["job_id"], str(target) + ".parquet")
    before = listing(target)
    single = (tmp_path / "exports" / "data.parquet").read_bytes()

    real, calls = pq.ParquetWriter.write_table, []

    def failing(self: Any, table: pa.Table, *args: Any, **kwargs: Any) -> Any:
        calls.append(table.num_rows)
        if len(calls) == 3:
            raise OSError("disk full (injected after two parts)")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    with pytest.raises(OSError, match="injected"):
        export(second["state"], second["job_id"], str(target))
    assert listing(target) == before
    damage(second, 3)
    with pytest.raises(IntegrityError):
        export(second["state"], second["job_id"], str(target) + ".parquet")
    assert (tmp_path / "exports" / "data.parquet").read_bytes() == single
    assert sorted(os.listdir(tmp_path / "exports")) == ["data", "data.parquet"]

    monkeypatch.undo()
    third = make_job(str(tmp_path / "c"), numbers(2, 500, seed=3))
    export(third["state"], third["job_id"], str(target))  # replaces the previous one
    marker = json.loads((target / "_winnow_export.json").read_text())
    assert marker["job_id"] == third["job_id"]
    assert sorted(os.listdir(target)) == ["_winnow_export.json", "part-00000.parquet",
                                          "part-00001.parquet"]  # fmt: skip
    assert sorted(os.listdir(tmp_path / "exports")) == ["data", "data.parquet"]


def object_names(fs: Any, root: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p[len(root) + 1 :] for p in fs.find(root))


@pytest.mark.parametrize("backend", ["memory", "s3"])
def test_object_store_folder_export_writes_the_marker_last(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch
):
    if backend == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        options = s3_options(request.getfixturevalue("s3_server"))
        base = f"s3://{bucket}/w"
    else:
        options, base = {}, f"memory://export-{tmp_path.name}"
    fs, root = resolve(base, options)
    big = make_job(base + "/a", numbers(4, 500, seed=4), options)
    small = make_job(base + "/b", numbers(2, 500, seed=5), options)
    to = base + "/exports/data"
    export(big["state"], big["job_id"], to)
    assert object_names(fs, root + "/exports") == [
        "data/_winnow_export.json", *(f"data/part-0000{i}.parquet" for i in range(4))
    ]  # fmt: skip

    # a copy that fails part-way: the old marker is gone first, so the folder
    # does not read as a finished export; no temporaries stay behind
    real, copies = fs.copy, []

    def failing_copy(path1: Any, path2: Any, **kwargs: Any) -> Any:
        copies.append(path2)
        if len(copies) == 2:
            raise OSError("connection reset (injected)")
        return real(path1, path2, **kwargs)

    monkeypatch.setattr(fs, "copy", failing_copy)  # the instance export uses (fsspec caches it)
    with pytest.raises(OSError, match="injected"):
        export(small["state"], small["job_id"], to)
    names = object_names(fs, root + "/exports")
    assert "data/_winnow_export.json" not in names and not any(".winnow-tmp-" in n for n in names)

    monkeypatch.undo()
    export(small["state"], small["job_id"], to)  # a rerun finishes it
    names = object_names(fs, root + "/exports")
    assert names == [
        "data/_winnow_export.json",
        "data/part-00000.parquet",
        "data/part-00001.parquet",
    ]
    marker = json.loads(fs.cat_file(root + "/exports/data/_winnow_export.json"))
    assert marker["job_id"] == small["job_id"]
    for part in marker["parts"]:
        assert sha(fs.cat_file(f"{root}/exports/data/{part['name']}")) == part["sha256"]
    expected = api.output_table(small["record"], options)
    with fsspec.open(to + ".parquet", "wb", **options):
        pass  # an existing object at the single-file target is replaced whole
    export(small["state"], small["job_id"], to + ".parquet")
    assert pq.read_table(pa.BufferReader(fs.cat_file(root + "/exports/data.parquet"))).equals(
        expected
    )
    assert not any(".winnow-tmp-" in n for n in object_names(fs, root))


def bytes_under(folder: Path) -> int:
    total = 0
    for base, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # renamed while we looked
                total += os.stat(os.path.join(base, name)).st_size
    return total


def test_sigkill_mid_export_leaves_only_the_previous_export_and_temporaries(tmp_path: Path):
    job = make_job(str(tmp_path / "j"), numbers(60, 100_000, seed=6))  # 60 x 1.2 MB
    previous = make_job(str(tmp_path / "p"), numbers(2, 100, seed=7))
    exports = tmp_path / "exports"
    export(previous["state"], previous["job_id"], str(exports / "data"))
    before = listing(exports / "data")
    for target in (exports / "all.parquet", exports / "data"):
        args = [
            "export",
            job["job_id"],
            "--to",
            str(target),
            "--state",
            str(tmp_path / "j" / "state"),
        ]
        # kill once about 4 MB of the export's 70 MB are on disk, wherever they are
        enough = bytes_under(exports) + (4 << 20)
        proc = processes.start_until(
            args, lambda n=enough: bytes_under(exports) > n, timeout=60, step=0.005,
            log=tmp_path / "export", session=False,
        )  # fmt: skip
        proc.kill()
        proc.wait()
        stderr = (tmp_path / "export.err").read_text()
        assert proc.returncode == -signal.SIGKILL, f"finished before the kill: {stderr}"
        leftovers = sorted(p.name for p in exports.iterdir() if p.name != "data")
        assert leftovers and all(TEMP.fullmatch(n) for n in leftovers), leftovers
        assert listing(exports / "data") == before
        assert not (exports / "all.parquet").exists()
