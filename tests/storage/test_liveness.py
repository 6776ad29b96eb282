"""The one process-liveness check: alive, gone, unknown, and zombies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from winnow.storage.liveness import Liveness, liveness

HERE = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no such process any more (pids are not reused this fast)
    return proc.pid


def test_this_process_is_alive() -> None:
    assert liveness(os.getpid(), HERE) is Liveness.ALIVE
    assert liveness(str(os.getpid()), HERE) is Liveness.ALIVE  # as a job record stores it


def test_a_reaped_process_is_gone() -> None:
    assert liveness(_dead_pid(), HERE) is Liveness.GONE


def test_another_users_process_is_alive() -> None:
    """kill() says PermissionError for init when we are not root: that is alive."""
    if os.geteuid() != 0:
        assert liveness(1, HERE) is Liveness.ALIVE
        return
    # Root may signal every process: ask from a forked child that became nobody.
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.setuid(65534)
            os.write(write, liveness(1, HERE).name.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 64).decode() == "ALIVE"
    os.close(read)


@pytest.mark.parametrize("pid", [None, 0, ""])
def test_no_pid_is_unknown(pid: int | str | None) -> None:
    assert liveness(pid, HERE) is Liveness.UNKNOWN


@pytest.mark.parametrize("host", ["elsewhere", None])
def test_another_host_is_unknown(host: str | None) -> None:
    assert liveness(_dead_pid(), host) is Liveness.UNKNOWN


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="zombies are read from /proc")
def test_a_zombie_is_alive_unless_asked() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert liveness(proc.pid, HERE) is Liveness.ALIVE
        assert liveness(proc.pid, HERE, zombie_is_gone=True) is Liveness.GONE
    finally:
        proc.wait()
