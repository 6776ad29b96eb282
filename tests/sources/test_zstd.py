"""The .zst reader gives zstandard's bytes for intact files and notices a tear."""

from __future__ import annotations

import io
import random

import pytest
import zstandard

from winnow.sources import zstd
from winnow.sources.zstd import ZstdReader

_RNG = random.Random(7)  # incompressible enough that a frame spans many steps
DATA = [_RNG.randbytes(300_000), b"second frame " * 10_000 + _RNG.randbytes(50_000), b"", b"x"]


def _file(frames: list[bytes]) -> bytes:
    compressor = zstandard.ZstdCompressor()
    return b"".join(compressor.compress(f) for f in frames)


@pytest.mark.parametrize("step", [7, 4096, zstd.STEP])
def test_every_frame_reads_back_whole_in_order(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    monkeypatch.setattr(zstd, "STEP", step)
    with ZstdReader(io.BytesIO(_file(DATA))) as reader:
        assert reader.read() == b"".join(DATA)
        assert reader.read() == b"" and reader.read1(10) == b""
    assert reader.closed


def test_sized_reads_never_exceed_the_size_and_lose_nothing() -> None:
    reader = ZstdReader(io.BytesIO(_file(DATA)))
    parts = []
    while part := reader.read1(1000):
        assert 0 < len(part) <= 1000
        parts.append(part)
    assert b"".join(parts) == b"".join(DATA)
    reader = ZstdReader(io.BytesIO(_file(DATA)))
    whole = b"".join(DATA)
    assert reader.read(5) == whole[:5] and reader.read(200_000) == whole[5:200_005]
    assert reader.read(10**7) == whole[200_005:]


def test_an_empty_file_is_empty() -> None:
    assert ZstdReader(io.BytesIO(b"")).read() == b""


@pytest.mark.parametrize("cut", [1, 20, 5000])
def test_a_stream_cut_short_raises_eof_after_its_readable_bytes(cut: int) -> None:
    whole = _file(DATA[:2])
    reader = ZstdReader(io.BytesIO(whole[:-cut]))
    got = b""
    with pytest.raises(EOFError, match="cut short"):
        while part := reader.read1(1 << 16):
            got += part
    assert (b"".join(DATA[:2])).startswith(got)
