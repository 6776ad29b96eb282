"""What the benchmark scripts share: running an engine in its own process, timed, with
its peak RSS polled, and a few report helpers. Imported by the scripts of this folder
(run directly: their folder is on ``sys.path``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class PeakRSS:
    """Polls a process's resident set size and, with ``tree``, that of it and its descendants.

    The driver's figure also reads the kernel's high-water mark (``VmHWM``), so a
    peak between two polls is not missed; the tree's is the largest sum seen.
    """

    def __init__(self, pid: int, interval: float = 0.05, tree: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.tree = tree
        self.driver = self.total = 0
        self._stop = threading.Event()
        try:
            import psutil

            self._proc: Any = psutil.Process(pid)
        except Exception:  # psutil missing or the process already gone: /proc only
            self._proc = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        rss = total = 0
        if self._proc is not None:
            with contextlib.suppress(Exception):
                rss = total = self._proc.memory_info().rss
                if self.tree:
                    for child in self._proc.children(recursive=True):
                        with contextlib.suppress(Exception):
                            total += child.memory_info().rss
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(("VmHWM:", "VmRSS:")):
                    rss = max(rss, int(line.split()[1]) * 1024)
        self.driver = max(self.driver, rss)
        self.total = max(self.total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> tuple[int | None, int | None]:
        """The peaks seen: (the process, it and its descendants; None without ``tree``)."""
        self._stop.set()
        self._thread.join()
        return self.driver or None, (self.total or None) if self.tree else None


def child_env() -> dict[str, str]:
    """The environment of an engine's process: a fresh embedded Ray, this interpreter."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "WINNOW_STATE"):
        env.pop(key, None)  # always a fresh embedded Ray, never an existing cluster
    env["PYTHONUNBUFFERED"] = "1"
    # Under `uv run` (as `make bench` is), Ray >= 2.43 otherwise packages the working
    # directory and builds a fresh uv venv for the job's workers: tens of seconds of
    # start-up that would be charged to Winnow and Ray Data. Workers use this interpreter.
    env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def run_process(
    cmd: list[str], log_dir: Path, tag: str, timeout: float, tree: bool = False
) -> dict[str, Any]:
    """Run ``cmd`` from the repository root; its rc, seconds, peak RSS and output.

    Keys: ``rc``, ``timed_out``, ``process_s`` (wall seconds of the whole
    process), ``peak_rss`` (the process alone), ``tree_rss`` (with its
    descendants, when ``tree``), ``stdout``, ``stderr``.
    """
    out_path, err_path = log_dir / f"{tag}.stdout", log_dir / f"{tag}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=err, start_new_session=True
        )
        rss = PeakRSS(proc.pid, tree=tree)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            rc = -signal.SIGKILL
        except BaseException:
            kill_group(proc)
            raise
        finally:
            driver, total = rss.stop()
        wall = time.perf_counter() - t0
    return {
        "rc": rc,
        "timed_out": rc == -signal.SIGKILL,
        "process_s": wall,
        "peak_rss": driver,
        "tree_rss": total,
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the child we started (its own session: it and what it spawned)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def last_json(text: str, prefix: str = "") -> dict[str, Any] | None:
    """The last line of ``text`` (after ``prefix``) that is a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if prefix:
            if not line.startswith(prefix):
                continue
            line = line[len(prefix) :]
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def mib(n: int | None) -> str:
    """Bytes as MiB for a table cell; "-" when unknown."""
    return "-" if not n else f"{n / 2**20:,.0f} MiB"


def versions(packages: tuple[str, ...]) -> str:
    """The installed version of each package, for the report's header."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in packages:
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def load() -> str:
    """The load averages (1, 5, 15 min)."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
