"""Issue proofs: a folder of malformed inputs, and a run killed ten times on its way."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tests import processes
from tests.conftest import PACED, run_args, run_cli, run_json
from winnow import api, sources
from winnow.tools.quarantine import quarantined


def _good(i: int) -> bytes:
    doc = {"id": i, "url": f"https://x.example/{i}", "text": f"document {i} " * 12, "source": "t"}
    return json.dumps(doc).encode() + b"\n"


@pytest.mark.slow
def test_a_folder_of_malformed_inputs_quarantines_each_bad_record_and_loses_no_good_row(
    tmp_path: Path,
):
    src = tmp_path / "inputs"
    src.mkdir()
    good_rows = 0
    expected_bad: dict[str, int] = {}
    # a truncated gzip: its readable rows survive, the torn last line is quarantined
    gz = gzip.compress(b"".join(_good(i) for i in range(0, 400)))
    (src / "a-truncated.jsonl.gz").write_bytes(gz[: len(gz) - 40])
    [f] = sources.discover([str(src / "a-truncated.jsonl.gz")])
    [(kept, torn)] = list(sources.read(f, [(0, sources.file_stats(f)["rows"])], None))
    assert 300 < kept.num_rows < 400 and len(torn) == 1
    good_rows += kept.num_rows
    expected_bad["a-truncated.jsonl.gz"] = 1
    # a single-block .zst cut short: no row is readable, the tear itself is quarantined
    zst = zstandard.ZstdCompressor().compress(b"".join(_good(i) for i in range(500, 600)))
    (src / "a-truncated.jsonl.zst").write_bytes(zst[: len(zst) - 20])
    expected_bad["a-truncated.jsonl.zst"] = 1
    # binary junk between good lines
    junk = _good(1000) + os.urandom(300).replace(b"\n", b"") + b"\n" + _good(1001)
    (src / "b-junk.jsonl").write_bytes(junk)
    good_rows += 2
    expected_bad["b-junk.jsonl"] = 1
    # mixed schemas: a wrong type, an array, an object missing fields (kept: nulls)
    mixed = (
        _good(2000)
        + b'{"id": "two thousand and one", "text": "wrong type for id"}\n'
        + b"[1, 2, 3]\n"
        + b'{"id": 2003, "text": "no url or source: kept with nulls"}\n'
    )
    (src / "c-mixed.jsonl").write_bytes(mixed)
    good_rows += 2
    expected_bad["c-mixed.jsonl"] = 2
    # an empty file: nothing to read, nothing wrong
    (src / "d-empty.jsonl").write_bytes(b"")
    # invalid UTF-8 inside an otherwise valid JSON line
    (src / "e-utf8.jsonl").write_bytes(_good(3000) + b'{"id": 3001, "text": "caf\xe9"}\n')
    good_rows += 1
    expected_bad["e-utf8.jsonl"] = 1

    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    args = ["run", "demo", "--profile", "local-cpu", "--input", str(src), *where]

    # A 0-byte Parquet file: a named error, exit 2, and nothing written to the state.
    (src / "f-zero.parquet").write_bytes(b"")
    refused = run_cli(*args)
    assert refused.returncode == 2
    assert "f-zero.parquet" in refused.stderr and "not a readable parquet file" in refused.stderr
    assert not (tmp_path / "state").exists()
    (src / "f-zero.parquet").unlink()

    record = run_json(*args)
    assert record["status"] == "SUCCEEDED"
    assert record["counts"]["normalize"]["rows_in"] == good_rows
    assert record["bad_records"] == sum(expected_bad.values())
    quarantine = api.open_state(str(tmp_path / "state"))
    bad = quarantined(quarantine).to_pylist()
    by_file: dict[str, int] = {}
    for b in bad:
        by_file[Path(b["file"]).name] = by_file.get(Path(b["file"]).name, 0) + 1
        assert b["row"] >= 1 and b["error"]
        if Path(b["file"]).name.startswith("a-truncated"):
            assert b["error"].startswith("TruncatedInput"), b
    assert by_file == expected_bad
    ids = api.output_table(record).column("id").to_pylist()
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_chaos_five_driver_kills_and_five_worker_kills_then_identical_export(
    tmp_path: Path, demo_inputs: list[str]
):
    rng = random.Random(20261124)
    sets = ["batch_rows=20"]  # 225 batches
    clean = run_json(*run_args(PACED, tmp_path, demo_inputs, *sets, state="cs", output="co"))
    args = run_args(PACED, tmp_path, demo_inputs, *sets, "pace.delay_s=0.02", state="s", output="o")
    segments = tmp_path / "s" / "stages"
    driver_kills = worker_kills = 0
    while driver_kills < 5:
        proc = processes.start(args)
        processes.wait_for(lambda p=proc: bool(processes.stage_workers(p.pid)), 120, step=0.05)
        # one worker actor killed at a random moment of this attempt...
        time.sleep(rng.uniform(0.2, 1.5))
        workers = processes.stage_workers(proc.pid)
        if workers and proc.poll() is None:
            os.kill(rng.choice(workers), signal.SIGKILL)
            worker_kills += 1
        # ...then the driver, at another random moment
        time.sleep(rng.uniform(0.3, 2.0))
        if proc.poll() is not None:
            break  # it finished: the rest of the kills cannot happen in this run
        processes.kill_group(proc)
        driver_kills += 1
    final = run_json(*args)
    assert final["status"] == "SUCCEEDED"
    assert driver_kills == 5 and worker_kills == 5, (driver_kills, worker_kills)
    assert any(segments.iterdir())
    a = tmp_path / "clean.parquet"
    b = tmp_path / "chaos.parquet"
    for job, path, state in ((clean, a, "cs"), (final, b, "s")):
        done = run_cli("export", job["job_id"], "--to", str(path), "--state", str(tmp_path / state))
        assert done.returncode == 0, done.stderr
    assert a.read_bytes() == b.read_bytes()  # byte for byte
    table = pq.read_table(b)
    assert table.num_rows == clean["rows_out"]
    assert len(set(table.column("id").to_pylist())) == table.num_rows
    assert isinstance(table, pa.Table)
