"""Connecting to Ray and sizing actor pools against what the cluster has."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray

from winnow.errors import ConfigError, UsageError
from winnow.execution import embedded
from winnow.execution.capacity import Capacity, fit_pools
from winnow.pipeline import StageSpec

log = logging.getLogger(__name__)


def connect(address: str | None, num_cpus: int | None = None, dashboard: bool = False) -> bool:
    """Start an embedded local Ray, or attach to ``address``/``RAY_ADDRESS``.

    ``dashboard`` starts the embedded Ray with its dashboard (on 127.0.0.1);
    a cluster's dashboard is its own. Returns True when this call started Ray
    (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    # Every task returns its error in its record, which the driver reads; the
    # second return (the batch, for the next stage) of a failed task is never
    # read, and Ray would print an "Unhandled error" block for each at exit.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    with _keep_signal_handlers():
        return _init(address, num_cpus, dashboard)


def worker_logs() -> str | None:
    """Where an embedded Ray keeps its stage actors' output (None when attached)."""
    session = (
        _context.address_info.get("session_dir") if _embedded and _context is not None else None
    )
    return os.path.join(str(session), "logs") if session else None


def dashboard_url() -> str | None:
    """The dashboard of the Ray this process is connected to, if it has one."""
    if not ray.is_initialized() or _context is None:
        return None
    url = str(getattr(_context, "dashboard_url", "") or "")
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Ray's core worker installs its own SIGTERM handler; keep the caller's."""
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def shutdown() -> None:
    """Disconnect from Ray; stop the embedded Ray if this process started it."""
    global _context
    _context = None
    ray.shutdown()


# What ray.init() returned for this process's connection (its dashboard URL, its
# session folder), and whether this process started that Ray itself.
_context: Any = None
_embedded = False


def _init(address: str | None, num_cpus: int | None, dashboard: bool) -> bool:
    global _context, _embedded
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "configure_logging": True,
    }
    if address:
        _check_reachable(address)
        if _is_loopback(address):
            _keep_loopback()
            _use_local_token()
        _context, _embedded = _attach(address, common), False
        return True
    # What stage actors print goes to the node's log files, not through the progress
    # bars; a run with failures says where they are (worker_logs).
    common["log_to_driver"] = False
    _keep_loopback()
    _context = embedded.start(num_cpus or os.cpu_count() or 1, common, dashboard)
    _embedded = True
    return True


# What the head's Ray Client proxy answers when the per-client server it
# starts for each ray:// driver died or was not ready in time (a busy head):
# a fresh attempt gets a fresh server, so these are worth retrying.
CLIENT_SERVER_START_FAILURES = (
    "Starting Ray client server failed",
    "Proxy failed to Connect to backend",
)
ATTACH_ATTEMPTS = 3


def _attach(address: str, common: dict[str, Any]) -> Any:
    attempts = ATTACH_ATTEMPTS if address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            transient = any(s in str(exc) for s in CLIENT_SERVER_START_FAILURES)
            if transient and attempt < attempts:
                log.warning(
                    "the Ray Client server at %s failed to start a server for this driver "
                    "(attempt %d of %d); retrying",
                    address,
                    attempt,
                    attempts,
                )
                shutdown()
                time.sleep(2.0 * attempt)
                continue
            hint = ""
            if os.environ.get(AUTH_MODE, "").lower() != "token":
                hint = (
                    f" If the cluster uses token auth, set {AUTH_MODE}=token here (token in "
                    "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."
                )
            raise UsageError(
                f"cannot attach to the Ray cluster at {address!r} ({exc}). Check the address "
                "(ray://HEAD:10001 or auto) or drop --address to run on an embedded local Ray."
                + hint
            ) from None


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _keep_loopback() -> None:
    """Keep an embedded Ray, or a driver of a loopback cluster, on 127.0.0.1.

    Ray swaps 127.0.0.1 for the machine's routable IP, and a node whose address
    is not loopback binds its GCS, raylet and agent ports on every interface,
    where anyone on the network could run code on it. Telling Ray it runs on
    one machine (what it assumes on macOS and Windows) keeps the address, and
    so every port, on loopback; the environment variable carries that to the
    processes Ray starts from here.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


AUTH_MODE = embedded.AUTH_MODE


def _use_local_token() -> None:
    """Attach to a Ray on this machine with this machine's token, if there is one.

    ``ray start`` turns token auth on by itself when a token exists (and any
    embedded ``ray.init()`` writes one to ``~/.ray/auth_token``), as does a
    driver given ``address="auto"``; a driver given an explicit address does
    not, and is refused after 20 s of retries. A loopback address is this
    machine, so its token goes to no one else. ``RAY_AUTH_MODE``, when set, wins.
    """
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    if os.environ.get(AUTH_MODE) is not None:
        return
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ[AUTH_MODE] = "token"
        Config.initialize("")  # Ray reads the mode from its cached config


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at HOST:PORT.

    Ray retries a GCS it cannot reach for minutes before giving up.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "/" in target:
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(
            f"cannot attach to the Ray cluster at {address!r}: nothing answers there "
            f"({exc.strerror or exc}). Start the cluster (e.g. `uv run python "
            "cluster/loopback.py up`), check the address (HEAD:6379, ray://HEAD:10001 or "
            "auto), or drop --address to run on an embedded local Ray."
        ) from None


def register_pipeline_code(specs: list[StageSpec]) -> None:
    """Ship pipeline modules loaded from files to workers by value.

    That is the module of each stage's class and of each of its base classes:
    a stage may subclass one from another pipeline file (loaded by path too),
    which workers could not import by name either.
    """
    from ray import cloudpickle

    for spec in specs:
        # A grouping stage runs inside its map or reduce side: ship its own module.
        stage = getattr(spec.stage, "grouping", spec.stage)
        for cls in type(stage).__mro__:
            module = sys.modules.get(cls.__module__)
            if module is not None and module.__name__.startswith("winnow_pipelines."):
                cloudpickle.register_pickle_by_value(module)


def cluster_capacity() -> Capacity:
    """What the connected Ray cluster has: totals and the largest single node."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [n.get("Resources", {}) for n in nodes]
    return Capacity.of(per_node, source="Ray cluster")


def size_pools(specs: list[StageSpec], active: list[bool]) -> dict[str, int]:
    """Actors per stage: as many as wanted, within what the cluster can host.

    Raises:
        ConfigError: a stage's request can never be met on this cluster.
    """
    sizes, problems = fit_pools(specs, active, cluster_capacity())
    if problems:
        raise ConfigError(problems[0])
    return sizes
