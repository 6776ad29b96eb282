"""SIGKILL of a process compacting a stage's segments, at each of its steps: nothing is lost.

A compaction reads the segments twice (which line of each key to keep; then
those lines, copied into the merged segment), publishes the merged segment,
indexes it, removes the merged segments, then their indexes. A process killed
between any two of these leaves a state that loads the same records, with no
damage, and that the next compaction tidies into one segment.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import processes
from winnow.records import BatchStatus
from winnow.storage.checkpoints import CheckpointStore
from winnow.storage.fs import resolve

# Compacts the stage at argv[1], pausing (until killed) at the step argv[2] names,
# after touching the file argv[3].
CHILD = """
import sys, time
from pathlib import Path
from winnow.storage import checkpoints, segment_lines
from winnow.storage.fs import resolve

state, step, ready = sys.argv[1:4]
store = checkpoints.CheckpointStore(*resolve(state, {}), job_id="compactor")

def pause():
    Path(ready).touch()
    time.sleep(120)

if step == "copying":
    copy = segment_lines.merged_lines
    def merged_lines(segments, merge):
        for n, line in enumerate(copy(segments, merge)):
            if n == 2:
                pause()
            yield line
    segment_lines.merged_lines = merged_lines
else:
    removals = {"published": 1, "sources-removed": 2}[step]
    rm, calls = store.fs.rm, []
    def paused_rm(*args, **kwargs):
        calls.append(args)
        if len(calls) == removals:
            pause()
        return rm(*args, **kwargs)
    store.fs.rm = paused_rm
store.compact("s", min_segments=2)
print("compacted without pausing", file=sys.stderr)
"""


def rec(key: str, ts: float, **extra: object) -> dict:
    return {"stage": "s", "key": key, "status": BatchStatus.SUCCEEDED, "ts": ts, **extra}


@pytest.mark.parametrize("step", ["copying", "published", "sources-removed"])
def test_a_compaction_killed_at_any_step_loses_nothing(tmp_path: Path, step: str):
    state = str(tmp_path / "state")
    store = CheckpointStore(*resolve(state, {}), job_id="j1", flush_every=2)
    for i in range(12):  # six keys, each written twice: the later line wins
        store.append(rec(f"k{i % 6}", ts=float(i + 1), n=i))
    store.flush()
    before = store.load("s")
    assert len(before.segments) == 6

    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, state, step, str(ready)], stderr=subprocess.PIPE
    )
    try:
        assert processes.wait_for(lambda: ready.exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)

    after = CheckpointStore(*resolve(state, {}), job_id="j2").load("s")
    assert after.records == before.records and not after.damage
    assert {k: r["n"] for k, r in after.records.items()} == {f"k{i}": i + 6 for i in range(6)}
    published = [p for p in after.segments if "-compact-" in p]
    assert len(published) == (0 if step == "copying" else 1)

    tidy = CheckpointStore(*resolve(state, {}), job_id="j3")
    if len(after.segments) > 1:
        assert tidy.compact("s", min_segments=2)
    final = tidy.load("s")
    assert len(final.segments) == 1 and final.records == before.records and not final.damage
