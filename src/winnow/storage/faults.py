"""A fault-injecting filesystem, for proving that storage faults lose nothing.

``faulty://<path>`` is the local filesystem with failures injected at a set
probability per operation, configured by the environment (so Ray workers,
which inherit it, inject too)::

    WINNOW_FAULTS="seed=7,error=0.05,truncate=0.03,stall=0.02,stall_s=0.2"

* ``error``: the operation raises ``OSError`` (as a full disk, a refused
  permission or a 503 from an object store would) before doing anything;
* ``truncate``: a write stores only part of its bytes yet reports success,
  and a read returns only part of the file: the torn writes and short reads
  that verification must catch;
* ``stall``: the operation sleeps ``stall_s`` first.

The random stream is seeded by ``seed`` and the process id, so a run is
reproducible per process. Use it for chaos tests of a deployment, never for
data you keep.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from fsspec.implementations.local import LocalFileSystem

ENV = "WINNOW_FAULTS"


def _settings() -> dict[str, float]:
    out = {"seed": 0.0, "error": 0.0, "truncate": 0.0, "stall": 0.0, "stall_s": 0.1}
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        key, _, value = item.partition("=")
        if key.strip() not in out:
            raise ValueError(f"{ENV}: unknown setting {key!r}; known: {', '.join(out)}")
        out[key.strip()] = float(value)
    return out


class FaultyFileSystem(LocalFileSystem):
    """The local filesystem, with injected errors, torn writes, short reads and stalls."""

    protocol = ("faulty",)
    root_marker = "/"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_mkdir", True)
        super().__init__(*args, **kwargs)
        self.settings = _settings()
        self._rng = random.Random(f"{self.settings['seed']}-{os.getpid()}")
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {"error": 0, "truncate": 0, "stall": 0}

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str) and path.startswith("faulty://"):
            path = path[len("faulty://") :]
        return super()._strip_protocol(path)

    def unstrip_protocol(self, name: str) -> str:
        """The ``faulty://`` URL of ``name``."""
        return f"faulty://{self._strip_protocol(name)}"

    def _roll(self, op: str) -> str | None:
        with self._lock:
            r = self._rng.random()
        s = self.settings
        if r < s["stall"]:
            self.injected["stall"] += 1
            time.sleep(s["stall_s"])
            return None
        r -= s["stall"]
        if r < s["error"]:
            self.injected["error"] += 1
            raise OSError(f"injected fault: {op} failed (simulated I/O error)")
        r -= s["error"]
        if r < s["truncate"]:
            self.injected["truncate"] += 1
            return "truncate"
        return None

    # -- the operations Winnow's stores use --------------------------------
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write a file; an injected fault may raise first, or store only its first half."""
        if self._roll("write") == "truncate" and len(value) > 1:
            value = value[: len(value) // 2]
        super().pipe_file(path, value, mode=mode, **kwargs)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Read a file; an injected fault may raise first, or return only its first half."""
        fault = self._roll("read")
        data: bytes = super().cat_file(path, start=start, end=end, **kwargs)
        if fault == "truncate" and len(data) > 1:
            return data[: len(data) // 2]
        return data

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Rename a file, unless an injected fault raises first."""
        self._roll("rename")
        super().mv(path1, path2, **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether the path exists, unless an injected fault raises first."""
        self._roll("stat")
        return bool(super().exists(path, **kwargs))

    def rm_file(self, path: str) -> None:
        """Remove a file, unless an injected fault raises first."""
        self._roll("delete")
        super().rm_file(path)
