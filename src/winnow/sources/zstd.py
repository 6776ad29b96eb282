"""Reading .zst inputs so that a file cut short is noticed.

zstandard's stream reader (what fsspec opens .zst files with) reports the end
of its input as the end of the data, even in the middle of a frame: a .zst
copied only part-way reads as a shorter file, or as an empty one when it holds
a single block. This reader decompresses frame by frame and raises EOFError at
such a tear, as Python's gzip, bz2 and lzma readers do.
"""

from __future__ import annotations

from typing import Any

import zstandard

# Compressed bytes fed to the decompressor per step: with text's usual ratios
# (3-10x) a step yields a few MB to a few tens of MB, never the whole file.
STEP = 1 << 20


class ZstdReader:
    """A read-only binary stream of the data in a .zst file, frame after frame."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the decompressor of the current frame
        self._carry = b""  # compressed bytes past the end of the last frame
        self._buffer = b""  # decompressed bytes, returned up to self._pos
        self._pos = 0
        self.closed = False

    def read1(self, size: int = -1) -> bytes:
        """At least one byte unless at the end; ``size`` bounds what is returned."""
        while self._pos >= len(self._buffer):
            data = self._carry or self._raw.read(STEP)
            self._carry = b""
            if not data:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("zstd stream ends in the middle of a frame (file cut short)")
                return b""
            if self._frame is None or self._frame.eof:
                self._frame = self._dctx.decompressobj()
            self._buffer, self._pos = self._frame.decompress(data), 0
            if self._frame.eof:
                self._carry = self._frame.unused_data
        end = len(self._buffer) if size is None or size < 0 else self._pos + size
        out = self._buffer[self._pos : end]
        self._pos += len(out)
        return out

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` decompressed bytes (negative: all the rest); fewer only at the end."""
        if size is None or size < 0:
            parts = []
            while part := self.read1():
                parts.append(part)
            return b"".join(parts)
        parts, want = [], size
        while want > 0 and (part := self.read1(want)):
            parts.append(part)
            want -= len(part)
        return b"".join(parts)

    def readable(self) -> bool:
        """Always True: this is a read-only stream."""
        return True

    def seekable(self) -> bool:
        """Always False: a zstd stream is read front to back only."""
        return False

    def writable(self) -> bool:
        """Always False: this is a read-only stream."""
        return False

    def close(self) -> None:
        """Close the underlying raw stream (once)."""
        if not self.closed:
            self.closed = True
            self._raw.close()

    def __enter__(self) -> ZstdReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
