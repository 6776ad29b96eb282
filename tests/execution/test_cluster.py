"""The cluster a run uses: attaching through ray:// retries only what the head's
client proxy reports as a failed start of its per-driver server (other errors
fail at once), and stage pools are sized to fit it (no 2-core deadlock)."""

from __future__ import annotations

from typing import Any

import pytest
import ray

from winnow.errors import ConfigError, UsageError
from winnow.execution import cluster
from winnow.execution.cluster import size_pools
from winnow.pipeline import StageSpec
from winnow.stage import Resources, Stage

SERVER_DIED = (
    "Initialization failure from server:\nRuntimeError: Starting Ray client server failed. "
    "See ray_client_server_23000.err for detailed logs."
)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """ray.init answers with the queued outcomes, in order; no real cluster
    can be made to fail this way on demand."""
    seen: list[Any] = []
    monkeypatch.setattr(cluster.time, "sleep", lambda s: seen.append(("sleep", s)))
    monkeypatch.setattr(ray, "shutdown", lambda: seen.append("shutdown"))
    return seen


def _init_answers(monkeypatch: pytest.MonkeyPatch, calls: list[Any], *outcomes: Any) -> None:
    queue = list(outcomes)

    def fake_init(address: str, **_: Any) -> None:
        calls.append(("init", address))
        outcome = queue.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(ray, "init", fake_init)


def test_a_client_server_that_failed_to_start_is_retried(
    monkeypatch: pytest.MonkeyPatch, calls: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    _init_answers(monkeypatch, calls, ConnectionAbortedError(SERVER_DIED), None)
    cluster._attach("ray://127.0.0.1:10001", {})
    assert calls == [
        ("init", "ray://127.0.0.1:10001"), "shutdown", ("sleep", 2.0),
        ("init", "ray://127.0.0.1:10001"),
    ]  # fmt: skip
    assert "attempt 1 of 3" in caplog.text


def test_retries_stop_after_the_last_attempt_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, calls: list[Any]
) -> None:
    _init_answers(monkeypatch, calls, *[ConnectionAbortedError(SERVER_DIED)] * 3)
    with pytest.raises(UsageError, match="cannot attach to the Ray cluster at 'ray://h:1'"):
        cluster._attach("ray://h:1", {})
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "init"] == [
        ("init", "ray://h:1")
    ] * 3


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("ray://h:1", ConnectionError("authentication failed: bad token")),
        ("127.0.0.1:6379", ConnectionAbortedError(SERVER_DIED)),  # not a Ray Client address
    ],
)
def test_other_failures_are_not_retried(
    monkeypatch: pytest.MonkeyPatch, calls: list[Any], address: str, error: Exception
) -> None:
    _init_answers(monkeypatch, calls, error)
    with pytest.raises(UsageError, match="drop --address"):
        cluster._attach(address, {})
    assert calls == [("init", address)]


@pytest.mark.parametrize(("mode", "hinted"), [(None, True), ("disabled", True), ("token", False)])
def test_a_refused_attach_names_token_auth_unless_it_is_on(
    monkeypatch: pytest.MonkeyPatch, calls: list[Any], mode: str | None, hinted: bool
) -> None:
    """Ray reports a refused token only in its C++ log, as a plain failed connection."""
    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    _init_answers(monkeypatch, calls, ConnectionError("Failed to connect to Ray cluster at h:1"))
    with pytest.raises(UsageError) as caught:
        cluster._attach("10.0.0.5:6379", {})
    assert ("set RAY_AUTH_MODE=token here" in str(caught.value)) is hinted


class Noop(Stage):
    name = "noop"


def spec(name: str, **res: float) -> StageSpec:
    stage = Noop()
    stage.name = name  # type: ignore[misc]
    return StageSpec(stage=stage, resources=Resources(**res))  # type: ignore[arg-type]


@pytest.mark.slow
def test_pools_shrink_to_fit_two_cores_and_impossible_requests_are_refused():
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING"
    )
    try:
        specs = [
            spec("a", num_cpus=1, min_actors=1, max_actors=2),
            spec("b", num_cpus=1, min_actors=1, max_actors=2),
        ]
        assert size_pools(specs, [True, True]) == {"a": 1, "b": 1}
        with pytest.raises(ConfigError, match="need 3 CPU"):
            size_pools([*specs, spec("c", num_cpus=1)], [True, True, True])
        with pytest.raises(ConfigError, match=r"asks for 1 GPU.*local-cpu"):
            size_pools([spec("g", num_cpus=0.5, num_gpus=1)], [True])
        assert size_pools(specs, [True, False]) == {"a": 2}
    finally:
        ray.shutdown()
