"""Source read streams (what a reader actor runs, here outside Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from winnow import sources
from winnow.execution.reading import SourceStreams
from winnow.storage.artifacts import ArtifactStore


class FlakyReader(SourceStreams):
    """Fails reading the second range once, as a transient storage error would."""

    failed = False

    def _read(self, file, ranges):
        for batch in super()._read(file, ranges):
            yield batch
            if not self.failed:
                self.failed = True
                raise OSError("connection reset while reading")


def test_a_failed_read_fails_one_batch_and_the_stream_goes_on(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(30)))
    [f] = sources.discover([str(path)])
    reader = FlakyReader(ArtifactStore(str(tmp_path / "art")), None, "quarantine", {})
    reader.open("h", f, [(0, 10), (10, 20), (20, 30)])
    _, first = reader.next("h")
    assert first.column("id").to_pylist() == list(range(10))
    with pytest.raises(OSError, match="connection reset"):
        reader.next("h")
    _, third = reader.next("h")
    assert third.column("id").to_pylist() == list(range(20, 30))
    assert "h" not in reader.streams
    with pytest.raises(KeyError):
        reader.next("h")
