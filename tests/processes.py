"""Start a `winnow` command, wait for a moment of it, then kill or signal it.

The one place the tests do this. A command runs as ``python -m winnow.cli ARGS``
from the repository root. By default it gets a session of its own, so that
:func:`kill_group` takes the embedded Ray it started with it; a test that
means to kill the command alone (a lost driver) passes ``session=False`` and
calls ``proc.kill()``.

The moments are files appearing (:func:`has_files`), this driver's stage actors
coming up (:func:`stage_workers`) or anything else a test can check; the
waiting stops early when the command ends, and :func:`start_until` then fails
with the command's own output instead of killing nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import ROOT


def start(
    args: list[str],
    *,
    log: Path | None = None,
    pipe: bool = False,
    env: dict[str, str] | None = None,
    base_env: dict[str, str] | None = None,
    session: bool = True,
) -> subprocess.Popen[Any]:
    """``python -m winnow.cli ARGS``, running.

    Args:
        args: the command line after ``winnow``.
        log: send stdout to ``<log>.out`` and stderr to ``<log>.err``.
        pipe: read stdout and stderr as text through pipes (``communicate()``);
            without ``log`` or ``pipe`` both go to /dev/null.
        env: variables added to the environment.
        base_env: the environment they are added to (default: this process's).
        session: start a new session (and process group) for the command.
    """
    full_env = {**(os.environ if base_env is None else base_env), **(env or {})}
    full_env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "winnow.cli", *args]
    if log is not None:
        with open(f"{log}.out", "wb") as out, open(f"{log}.err", "wb") as err:
            return subprocess.Popen(
                command, cwd=ROOT, env=full_env, stdout=out, stderr=err,
                start_new_session=session,
            )  # fmt: skip
    where = subprocess.PIPE if pipe else subprocess.DEVNULL
    return subprocess.Popen(
        command, cwd=ROOT, env=full_env, stdout=where, stderr=where, text=pipe,
        start_new_session=session,
    )  # fmt: skip


def wait_for(ready: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll ``ready()`` every ``step`` seconds for up to ``timeout``; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(step)
    return ready()


def start_until(
    args: list[str],
    ready: Callable[[], bool],
    timeout: float,
    step: float = 0.01,
    **how: Any,
) -> subprocess.Popen[Any]:
    """:func:`start` the command and wait until ``ready()`` (or ``timeout``, or its end).

    Returns the command, still running: the moment to kill or signal it. Fails
    with the command's output when it ended first. ``how`` goes to :func:`start`.
    """
    proc = start(args, **how)
    wait_for(lambda: proc.poll() is not None or ready(), timeout, step)
    if proc.poll() is not None:
        raise AssertionError(
            f"`winnow {' '.join(args[:2])}` ended (exit {proc.returncode}) before its moment "
            f"came:\n{_output(proc, how.get('log'))}"
        )
    return proc


def has_files(folder: Path) -> Callable[[], bool]:
    """A moment: ``folder`` exists and holds something (a segment, a job record)."""
    return lambda: folder.exists() and any(folder.iterdir())


def alive_at_moment(
    proc: subprocess.Popen[Any], begun: Callable[[], bool], delay: float, step: float = 0.001
) -> bool:
    """Wait until ``begun()`` (or the command ends), then ``delay`` seconds more, the
    seeded moment: whether the command is still running then, to be killed."""
    wait_for(lambda: proc.poll() is not None or begun(), 180, step)
    time.sleep(delay)
    return proc.poll() is None


def exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie not yet reaped does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stage_workers(driver: int) -> list[int]:
    """Stage actor processes of this driver's embedded Ray: not another test's, and
    not those of a killed driver's Ray that is still shutting down."""
    found = []
    for child in descendants(driver):
        try:
            if "ray::StageWorker" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the command's process group (it and the Ray it started); wait for it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the command itself at this moment, then everything it started, and
    wait until none of those is left running."""
    below = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in below:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    wait_for(lambda: not any(_alive(p) for p in below), 20, step=0.05)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _output(proc: subprocess.Popen[Any], log: Path | None) -> str:
    if log is not None:
        return Path(f"{log}.err").read_text(errors="replace")[-2000:]
    if proc.stdout is None and proc.stderr is None:
        return "(its output went to /dev/null)"
    out, err = proc.communicate()
    return f"{out or ''}{err or ''}"[-2000:]
