"""Whether the process a record names is still alive.

Job records, pipeline locks and the gateway's pid file each name a process by
host and pid. :func:`liveness` is the one answer to "is it still there?":

- on this host, a process is ``ALIVE`` when ``os.kill(pid, 0)`` succeeds or
  is refused (``PermissionError``: it exists, owned by someone else), and
  ``GONE`` when there is no such process;
- on another host, or without a pid, it is ``UNKNOWN``: no signal reaches
  it. Most callers treat that as alive (a lock then waits for its lease, a
  job is left alone); the gateway's queue falls back to the job's heartbeat.

A zombie (exited, not yet reaped by its parent) still answers the signal
probe, so it counts as ``ALIVE`` unless the caller passes
``zombie_is_gone=True``, as ``winnow gateway stop`` does: run from the
process that started the gateway, it would otherwise wait for a reaping
that only it can do.
"""

from __future__ import annotations

import os
import socket
from enum import Enum
from pathlib import Path


class Liveness(Enum):
    """What can be told about a process named by host and pid."""

    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # on another host, or no pid: cannot be told from here


def liveness(pid: int | str | None, host: str | None, *, zombie_is_gone: bool = False) -> Liveness:
    """Whether process ``pid`` on ``host`` is alive (see the module docstring).

    Args:
        pid: The process id, as an int or as written in a record (a numeric
            string); falsy means the record names none.
        host: The host it ran on (``socket.gethostname()`` there); a process
            on another host is ``UNKNOWN``.
        zombie_is_gone: Count a zombie as ``GONE`` (Linux ``/proc`` only;
            elsewhere a zombie stays ``ALIVE``).

    Returns:
        ``ALIVE``, ``GONE`` or ``UNKNOWN``.
    """
    if host != socket.gethostname() or not pid:
        return Liveness.UNKNOWN
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return Liveness.GONE
    except PermissionError:
        return Liveness.ALIVE
    if zombie_is_gone and _zombie(int(pid)):
        return Liveness.GONE
    return Liveness.ALIVE


def _zombie(pid: int) -> bool:
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
