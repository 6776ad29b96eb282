"""How many actors of each stage a cluster can host (no Ray import: `plan` uses it).

Pools are sized so every stage's actors fit at once: a stage's pool starts at
``max_actors`` and the largest pools shrink first, never below ``min_actors``.
A request no single node can meet (more CPUs or GPUs per actor than any node
has) is a problem named before anything runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from winnow.execution import nvml
from winnow.pipeline import StageSpec


@dataclass
class Capacity:
    """What a cluster (or this machine) can host: CPUs and GPUs in all and on its largest node.

    Attributes:
        cpus: CPUs on all nodes together.
        gpus: GPUs on all nodes together.
        node_cpus: CPUs of the largest single node: the most one actor can get.
        node_gpus: GPUs of the largest single node.
        source: where the figures came from, as a problem message names it.
        nodes: how many nodes.
        custom: custom resources, by name.
    """

    cpus: float
    gpus: float
    node_cpus: float  # the largest single node's, what one actor can get at most
    node_gpus: float
    source: str
    nodes: int = 1
    custom: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, per_node: list[dict[str, Any]], source: str) -> Capacity:
        """The capacity of the nodes whose Ray resource dicts are ``per_node``."""

        def total(key: str) -> float:
            return float(sum(n.get(key, 0) for n in per_node))

        def biggest(key: str) -> float:
            return float(max((n.get(key, 0) for n in per_node), default=0))

        return cls(
            cpus=total("CPU"),
            gpus=total("GPU"),
            node_cpus=biggest("CPU"),
            node_gpus=biggest("GPU"),
            source=source,
            nodes=len(per_node),
        )

    @classmethod
    def local(cls, num_cpus: int | None, gpus: int) -> Capacity:
        """This machine as an embedded Ray sees it: ``num_cpus`` (None: every core), ``gpus``."""
        cpus = float(num_cpus or os.cpu_count() or 1)
        return cls(cpus, float(gpus), cpus, float(gpus), source="this machine (embedded Ray)")

    def to_dict(self) -> dict[str, Any]:
        """The capacity as ``winnow plan --json`` shows it."""
        return {
            "source": self.source,
            "nodes": self.nodes,
            "CPU": self.cpus,
            "GPU": self.gpus,
            "largest_node": {"CPU": self.node_cpus, "GPU": self.node_gpus},
        }


def fit_pools(
    specs: list[StageSpec], active: list[bool], cap: Capacity
) -> tuple[dict[str, int], list[str]]:
    """Actors per active stage, and the problems that make the job unschedulable."""
    problems: list[str] = []
    sizes: dict[str, int] = {}
    for spec, on in zip(specs, active, strict=True):
        if not on:
            continue
        r = spec.resources
        if r.num_gpus > cap.node_gpus:
            problems.append(
                f"stage {spec.name!r} asks for {r.num_gpus:g} GPU per actor but "
                f"{_where(cap)} has {_largest(cap, 'GPU', cap.node_gpus)}. Use a profile without "
                f"GPU requests (--profile local-cpu) or --set {spec.name}.num_gpus=0, or run on "
                "a cluster with GPUs."
            )
        if r.num_cpus > cap.node_cpus:
            problems.append(
                f"stage {spec.name!r} asks for {r.num_cpus:g} CPUs per actor but {_where(cap)} "
                f"has {_largest(cap, 'CPU', cap.node_cpus)}. Lower it with "
                f"--set {spec.name}.num_cpus=..."
            )
        sizes[spec.name] = r.max_actors
    if problems:
        return {n: 0 for n in sizes}, problems
    by_name = {s.name: s for s in specs}

    def need(attr: str) -> float:
        total: float = sum(getattr(by_name[n].resources, attr) * k for n, k in sizes.items())
        return total

    # Shrink the largest pools first until every actor fits at once, so no
    # actor waits forever for a CPU another stage holds.
    for kind, attr, have in (("CPU", "num_cpus", cap.cpus), ("GPU", "num_gpus", cap.gpus)):
        while need(attr) > have + 1e-9:
            candidates = [
                n
                for n, k in sizes.items()
                if k > by_name[n].resources.min_actors and getattr(by_name[n].resources, attr) > 0
            ]
            if not candidates:
                wants = ", ".join(
                    f"{n}: {k} x {getattr(by_name[n].resources, attr):g}" for n, k in sizes.items()
                )
                problems.append(
                    f"the stages' actors need {need(attr):g} {kind} at once ({wants}) but "
                    f"{_where(cap)} has {have:g}. Lower num_cpus/min_actors in the profile's "
                    "[stages.<name>] tables, or use a bigger cluster."
                )
                return sizes, problems
            biggest = max(candidates, key=lambda n: sizes[n])
            sizes[biggest] -= 1
    return sizes, problems


def _where(cap: Capacity) -> str:
    return "the Ray cluster" if cap.nodes > 1 or "cluster" in cap.source else "this machine"


def _largest(cap: Capacity, kind: str, value: float) -> str:
    return f"{value:g} {kind}s" if cap.nodes <= 1 else f"at most {value:g} {kind}s on any node"


def for_plan(
    specs: list[StageSpec], active: list[bool], address: str | None, ray_num_cpus: int | None
) -> dict[str, Any]:
    """What `winnow plan` reports: capacity, actors per stage, problems, GPUs seen by NVML."""
    devices, nvml_note = nvml.devices()
    if address or os.environ.get("RAY_ADDRESS"):
        from winnow.execution.cluster import cluster_capacity, connect, shutdown

        started = connect(address)
        try:
            cap = cluster_capacity()
        finally:
            if started:
                shutdown()
    else:
        cap = Capacity.local(ray_num_cpus, len(devices))
    sizes, problems = fit_pools(specs, active, cap)
    return {
        "cluster": cap.to_dict(),
        "actors": sizes,
        "problems": problems,
        "gpus": devices,
        "nvml": nvml_note or f"{len(devices)} GPU(s) visible to NVML on this machine",
    }
