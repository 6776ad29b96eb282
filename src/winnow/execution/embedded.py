"""Starting the embedded local Ray of `winnow run` without what one machine never uses.

`ray.init()` starts a node built for clusters: an autoscaler monitor, a
dashboard process, two Python agents and a log monitor beside the raylet, a
probe of the dashboard's dependencies, and a wait for the raylet that polls
once a second. On a laptop with two cores each of these is paid before the
first batch, on every run. Here they are left out for the length of
`ray.init()` only, through six of Ray's private hooks; each
change falls back to Ray's own behaviour if a Ray release renames the hook
(then the run is only slower, never different). Three settings of Ray's
system config (``SYSTEM_CONFIG``) do the rest. Recheck on a Ray upgrade.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from winnow.execution import BOOT, stand_in_agent

log = logging.getLogger(__name__)

# The modules Ray imports (ray/dashboard/optional_deps.py) to decide whether its
# dashboard agent may load its full set of modules or only the minimal ones.
DASHBOARD_DEPENDENCIES = (
    "aiohttp",
    "aiohttp_cors",
    "grpc",
    "opencensus",
    "opentelemetry.exporter.prometheus",
    "opentelemetry.proto",
    "prometheus_client",
    "pydantic",
)
# Processes of a node connect to its local sockets (the raylet's own client of
# its object store, workers to the raylet) with retries, a second apart by
# default: when the raylet's store thread is still mapping its memory (about
# half the starts on two cores) the raylet loses a whole second. Retry every
# 20 ms instead, within the same 10 s budget. Task events feed the dashboard's
# task table and Ray's state API, neither of which an embedded Ray runs; the
# driver would spend about 0.25 s of every shutdown flushing them.
SYSTEM_CONFIG = {
    "raylet_client_connect_timeout_milliseconds": 20,
    "raylet_client_num_connect_attempts": 500,
    "task_events_report_interval_ms": 0,
}
AUTH_MODE = "RAY_AUTH_MODE"
REGISTRATION_POLL_S = 0.02
REGISTRATION_TIMEOUT_S = 10.0  # then Ray's own once-a-second wait, and its errors


def start(num_cpus: int, common: dict[str, Any], dashboard: bool = False) -> Any:
    """``ray.init()`` of a single-node Ray on 127.0.0.1, started lean; its context.

    With ``dashboard`` the node keeps its dashboard, bound to 127.0.0.1 (Ray
    takes 8265, or a free port if that one is taken).
    """
    _ask_for_token_auth()
    with _lean_node(dashboard), boot_path():
        return ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            _system_config=SYSTEM_CONFIG,
            **common,
        )


@contextlib.contextmanager
def boot_path() -> Iterator[None]:
    """``PYTHONPATH`` led by ``execution/boot`` while Ray starts its processes.

    Every process of the node (raylet, GCS, agents, workers) inherits it and
    runs ``boot/sitecustomize.py`` before importing Ray. The driver's own
    environment is given back afterwards.
    """
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (BOOT, before) if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _ask_for_token_auth() -> None:
    """Token auth on, as Ray turns it on by default for a new local cluster, but asked for.

    Ray then skips the WARNING it prints on every start about having turned it
    on by itself. Done as Ray does it (the variable for this process and its
    children, then its cached config refreshed); a mode the user set stays.
    """
    if os.environ.get(AUTH_MODE) is not None:
        return
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:  # another Ray: its own default (and its warning) then
        return
    os.environ[AUTH_MODE] = "token"
    Config.initialize("")


@contextlib.contextmanager
def _lean_node(dashboard: bool = False) -> Iterator[None]:
    """Swap up to six of Ray's node start-up steps for lean ones, then put them back.

    * No dashboard process (API server), unless the dashboard is asked
      for. With ``include_dashboard=False`` Ray
      still starts it for usage stats alone (which ``ray.init()`` turns off) and
      polls about 1.3 s for it to register; nothing else in it is loaded.
    * No autoscaler monitor: one node started for one run has nothing to
      scale, and a live monitor makes ``ray.shutdown()`` wait a second on it
      (its SIGTERM handler reports to a GCS that is already gone).
    * Dashboard dependencies are looked up, not imported: Ray imports aiohttp,
      OpenTelemetry and the rest in the driver (about 0.3 s of CPU) only to
      learn whether they are installed.
    * The driver waits for its raylet's registration in 20 ms steps. Ray asks
      the GCS once, 0.1 s after starting the raylet, and on a miss (always,
      on two cores: the raylet takes 0.6-0.9 s) sleeps a whole second before
      asking again.
    * Without the dashboard: no log monitor (it only forwards what workers
      print to drivers that ask, and an embedded Ray's driver does not), and
      stand-ins for the raylet's dashboard and runtime-env agents
      (``stand_in_agent``): about 2 s of CPU at every start, on two cores,
      for metrics nobody exports and runtime environments a run never asks
      for (if one is asked for, the stand-in becomes Ray's agent).
    """
    node_class = ray._private.node.Node
    utils = ray._private.utils
    services = ray._private.services
    swaps: list[tuple[Any, str, Callable[..., Any]]] = [
        (node_class, "start_monitor", lambda self: None),
        (services, "get_node", _registered_node(getattr(services, "get_node", None))),
    ]
    if not dashboard:  # the API server is the dashboard: keep Ray's steps when it is wanted
        swaps += [
            (node_class, "start_api_server", lambda self, **_: None),
            (utils, "get_dashboard_dependency_error", _missing_dashboard_dependency),
            (node_class, "start_log_monitor", lambda self: None),
            (services, AGENT_COMMAND, _stand_in_agents(getattr(services, AGENT_COMMAND, None))),
        ]
    saved = []
    for owner, name, replacement in swaps:
        original = getattr(owner, name, None)
        if original is None:
            log.debug("Ray has no %s.%s; starting with Ray's own step", owner.__name__, name)
            continue
        saved.append((owner, name, original))
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


# Builds the interpreter part of each Python process a node starts; the raylet's
# agents are told apart by their component name.
AGENT_COMMAND = "_build_python_executable_command_memory_profileable"


def _stand_in_agents(original: Callable[..., list[str]] | None) -> Callable[..., list[str]]:
    """Ray's command builder, with the two agents' commands led by ``stand_in_agent``.

    Ray appends each agent's script and arguments to what this returns; the
    stand-in reads them after ``--`` (and may run them: the runtime-env agent).
    Anything this Ray does not name as expected keeps Ray's own command.
    """

    def build(component: str, session_dir: str, *args: Any, **kwargs: Any) -> list[str]:
        assert original is not None
        command = original(component, session_dir, *args, **kwargs)
        try:
            from ray._private import ray_constants

            _raylet: Any = importlib.import_module("ray._raylet")  # compiled: no stubs

            names = {
                ray_constants.PROCESS_TYPE_DASHBOARD_AGENT: (
                    "dashboard",
                    (
                        _raylet.METRICS_AGENT_PORT_NAME,
                        _raylet.METRICS_EXPORT_PORT_NAME,
                        _raylet.DASHBOARD_AGENT_LISTEN_PORT_NAME,
                    ),
                ),
                ray_constants.PROCESS_TYPE_RUNTIME_ENV_AGENT: (
                    "runtime-env",
                    (_raylet.RUNTIME_ENV_AGENT_PORT_NAME,),
                ),
            }
            if component not in names:
                return command
            kind, ports = names[component]
            placeholder = "ab" * 28  # a node id's form; Ray's name for it, then a field
            files = [
                _raylet.get_port_filename(placeholder, port).replace(placeholder, "{node_id}")
                for port in ports
            ]
        except (ImportError, AttributeError) as exc:
            log.debug("Ray's agent ports are not where expected (%s); Ray's own agents", exc)
            return command
        if not all("{node_id}" in f for f in files):
            return command
        return [sys.executable, "-S", stand_in_agent.__file__, kind, *files, "--", *command]

    return build


def _missing_dashboard_dependency() -> ImportError | None:
    for name in DASHBOARD_DEPENDENCIES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return ImportError(f"No module named {name!r}")
    return None


def _registered_node(original: Callable[[str, str], Any] | None) -> Callable[[str, str], Any]:
    def get_node(gcs_address: str, node_id: str) -> Any:
        assert original is not None
        _await_registration(gcs_address, node_id)
        return original(gcs_address, node_id)  # Ray's own call: its errors, its timeout

    return get_node


def _await_registration(gcs_address: str, node_id: str) -> bool:
    """Whether the GCS listed ``node_id`` alive before the wait gave up.

    Anything unexpected (an older Ray's client, an RPC error) ends the wait:
    Ray's own ``get_node`` that follows then waits, and fails, as it always has.
    """
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
        from ray.core.generated.gcs_pb2 import GcsNodeInfo  # type: ignore[attr-defined]
        from ray.core.generated.gcs_service_pb2 import (  # type: ignore[attr-defined]
            GetAllNodeInfoRequest,
        )

        client = GcsClient(address=gcs_address)
        selector = [GetAllNodeInfoRequest.NodeSelector(node_id=bytes.fromhex(node_id))]
        alive = GcsNodeInfo.GcsNodeState.ALIVE
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
        while time.monotonic() < deadline:
            if client.get_all_node_info(timeout=5, node_selectors=selector, state_filter=alive):
                return True
            time.sleep(REGISTRATION_POLL_S)
    except Exception as exc:  # any failure: Ray's own wait takes over
        log.debug("waiting for the raylet's registration failed (%s); Ray's own wait follows", exc)
    return False
