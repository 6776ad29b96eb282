"""Connecting to Ray and sizing actor pools against what the cluster has."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import ray

from winnow.errors import ConfigError, UsageError
from winnow.pipeline import StageSpec


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Start an embedded local Ray, or attach to ``address``/``RAY_ADDRESS``.

    Returns True when this call started Ray (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    with _keep_signal_handlers():
        return _init(address, num_cpus)


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


def _init(address: str | None, num_cpus: int | None) -> bool:
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "configure_logging": True,
    }
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(
                f"cannot attach to the Ray cluster at {address!r} ({exc}). Check the address "
                "(ray://HEAD:10001 or auto) or drop --address to run on an embedded local Ray."
            ) from None
        return True
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count() or 1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        **common,
    )
    return True


def register_pipeline_code(specs: list[StageSpec]) -> None:
    """Ship pipeline modules loaded from files to workers by value."""
    from ray import cloudpickle

    for spec in specs:
        module = sys.modules.get(type(spec.stage).__module__)
        if module is not None and module.__name__.startswith("winnow_pipelines."):
            cloudpickle.register_pickle_by_value(module)


def size_pools(specs: list[StageSpec], active: list[bool]) -> dict[str, int]:
    """Actors per stage: as many as wanted, within what the cluster can host.

    Raises:
        ConfigError: a stage's request can never be met on this cluster.
    """
    total = ray.cluster_resources()
    cpus = float(total.get("CPU", 0))
    gpus = float(total.get("GPU", 0))
    sizes: dict[str, int] = {}
    for spec, on in zip(specs, active, strict=True):
        if not on:
            continue
        r = spec.resources
        if r.num_gpus > 0 and gpus < r.num_gpus:
            raise ConfigError(
                f"stage {spec.name!r} asks for {r.num_gpus} GPU per actor but the Ray cluster has "
                f"{gpus:g} GPUs. Use a profile without GPU requests (--profile local-cpu) or "
                f"--set {spec.name}.num_gpus=0, or run on a cluster with GPUs."
            )
        if r.num_cpus > cpus:
            raise ConfigError(
                f"stage {spec.name!r} asks for {r.num_cpus} CPUs per actor but the Ray cluster has "
                f"{cpus:g}. Lower it with --set {spec.name}.num_cpus=..."
            )
        sizes[spec.name] = r.max_actors
    by_name = {s.name: s for s in specs}

    def need(kind: str) -> float:
        attr = "num_cpus" if kind == "CPU" else "num_gpus"
        return sum(getattr(by_name[n].resources, attr) * k for n, k in sizes.items())

    # Shrink the largest pools first until every actor fits at once, so no
    # actor waits forever for a CPU another stage holds.
    for kind, have in (("CPU", cpus), ("GPU", gpus)):
        while need(kind) > have + 1e-9:
            attr = "num_cpus" if kind == "CPU" else "num_gpus"
            candidates = [
                n
                for n, k in sizes.items()
                if k > by_name[n].resources.min_actors and getattr(by_name[n].resources, attr) > 0
            ]
            if not candidates:
                wants = ", ".join(
                    f"{n}: {k} x {getattr(by_name[n].resources, attr):g}" for n, k in sizes.items()
                )
                raise ConfigError(
                    f"the stages' actors need {need(kind):g} {kind} at once ({wants}) but the "
                    f"cluster has {have:g}. Lower num_cpus/min_actors in the profile's "
                    "[stages.<name>] tables, or use a bigger cluster."
                )
            biggest = max(candidates, key=lambda n: sizes[n])
            sizes[biggest] -= 1
    return sizes
