"""Parquet batches aligned with row groups are read by the first stage's actors.

The same rows read as one stream through a reader actor must give the same
artifacts, byte for byte; only the way in differs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT
from winnow import api, sources
from winnow.execution import pools
from winnow.request import RunRequest

pytestmark = pytest.mark.slow


def parquet_copy(demo_inputs: list[str], folder: Path, row_group_size: int) -> str:
    """The demo's well-formed rows as two Parquet files with the given row groups."""
    import demo

    folder.mkdir()
    for n, url in enumerate(demo_inputs[:2]):
        [f] = sources.discover([url])
        rows = sources.file_stats(f)["rows"]
        [(batch, _)] = list(sources.read(f, [(0, rows)], demo.SCHEMA))
        table = pa.Table.from_batches([batch])
        pq.write_table(table, folder / f"part-{n}.parquet", row_group_size=row_group_size)
    return str(folder)


def run(tmp: Path, name: str, inputs: str) -> tuple[dict, list[str], bool]:
    """Run the demo keeping its actors, so the test can see whether a reader was started."""
    session = api.resolve_session(RunRequest(
        "demo", "local-cpu", [inputs], str(tmp / name / "out"), str(tmp / name / "state"),
        ["batch_rows=500"],
    ))  # fmt: skip
    by_range = {b.source.by_range for b in api.plan(session).batches}
    assert len(by_range) == 1
    record = api.execute(session, reuse_actors=True)
    started_reader = any(key[0] == "read" for key in pools.IDLE)
    pools.evict_idle_except(set())
    manifest = api.read_manifest(record["manifest"])
    return record, [e["artifact"]["digest"] for e in manifest["batches"]], started_reader


def test_aligned_parquet_skips_the_reader_and_gives_the_streamed_output(
    local_ray, tmp_path, demo_inputs, monkeypatch
):
    monkeypatch.chdir(ROOT)
    aligned = parquet_copy(demo_inputs, tmp_path / "aligned", row_group_size=250)
    streamed = parquet_copy(demo_inputs, tmp_path / "streamed", row_group_size=300)

    first, first_digests, first_reader = run(tmp_path, "a", aligned)
    second, second_digests, second_reader = run(tmp_path, "b", streamed)
    assert first["status"] == second["status"] == "SUCCEEDED"
    assert not first_reader, "batches aligned with row groups went through a reader actor"
    assert second_reader, "unaligned row groups must be read once, as a stream"
    assert first_digests == second_digests and len(first_digests) == first["batches"]
    assert first["rows_in"] == second["rows_in"] > 0
    assert first["counts"]["normalize"]["run"] == first["batches"]

    # a rerun skips every batch
    again, again_digests, _ = run(tmp_path, "a", aligned)
    assert again["skipped_fraction"] == 1.0 and again_digests == first_digests
