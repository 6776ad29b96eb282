"""The lean start of the embedded Ray agrees with what Ray itself would decide."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import ray

from winnow.execution import embedded


def _modules_ray_imports_to_probe() -> set[str]:
    source = Path(ray.__file__).parent / "dashboard" / "optional_deps.py"
    names = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_dependency_lookup_covers_every_module_ray_probes() -> None:
    """A Ray release that adds a dashboard dependency fails here, not at run time."""
    probed = _modules_ray_imports_to_probe()
    covered = set(embedded.DASHBOARD_DEPENDENCIES)
    missing = {
        name
        for name in probed
        if not any(name == c or name.startswith(c + ".") or c.startswith(name + ".")
                   for c in covered)
    }  # fmt: skip
    assert not missing, f"add to DASHBOARD_DEPENDENCIES: {sorted(missing)}"


def test_the_dependency_lookup_gives_rays_answer() -> None:
    ours = embedded._missing_dashboard_dependency()
    theirs = ray._private.utils.get_dashboard_dependency_error()
    assert (ours is None) == (theirs is None), (ours, theirs)


def test_a_missing_dependency_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        embedded, "DASHBOARD_DEPENDENCIES", (*embedded.DASHBOARD_DEPENDENCIES, "no_such_mod_xyz")
    )
    missing = embedded._missing_dashboard_dependency()
    assert isinstance(missing, ImportError) and "no_such_mod_xyz" in str(missing)


@pytest.mark.slow
def test_registration_wait_returns_for_a_live_node_and_gives_up_quietly(
    local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alive: the wait ends with True. A node that never registers: False, no error."""
    context = ray.get_runtime_context()
    gcs, node_id = context.gcs_address, context.get_node_id()
    assert embedded._await_registration(gcs, node_id) is True

    monkeypatch.setattr(embedded, "REGISTRATION_TIMEOUT_S", 0.3)
    assert embedded._await_registration(gcs, "ab" * 28) is False  # never registers
