"""The run request: one value from the command line to the queue and back."""

from __future__ import annotations

import pytest

from winnow.cli.app import cli
from winnow.errors import UsageError
from winnow.profile import Profile
from winnow.request import RunRequest

FULL = RunRequest(
    "pipelines/demo.py",
    "local-cpu",
    ["data/a.jsonl", "s3://bucket/b/*.parquet"],
    "out",
    "state",
    ["batch_rows=10", "tag.label=x y"],
    "full",
    "tag",
    "local",
)


def parsed(command: str, args: list[str]) -> RunRequest:
    """What the command line hands the command: parse ``winnow <command> ARGS`` with click."""
    cmd = cli.get_command(None, command)  # type: ignore[arg-type]
    ctx = cmd.make_context(command, list(args))
    seen: dict[str, RunRequest] = {}
    body = cmd.callback.__wrapped__  # type: ignore[union-attr]
    cmd.callback.__wrapped__ = lambda **kw: seen.setdefault("request", kw["request"])  # type: ignore[union-attr]
    try:
        ctx.invoke(cmd, **ctx.params)
    finally:
        cmd.callback.__wrapped__ = body  # type: ignore[union-attr]
    return seen["request"]


def test_run_args_parse_back_to_the_same_request() -> None:
    assert parsed("run", [FULL.pipeline, *FULL.run_args()]) == FULL
    plain = RunRequest("demo")
    assert plain.run_args() == []
    assert parsed("run", ["demo"]) == plain


@pytest.mark.parametrize("command", ["plan", "submit", "enqueue"])
def test_every_request_command_takes_the_same_options(command: str) -> None:
    ray_only = FULL.but(executor="ray")
    assert parsed(command, [ray_only.pipeline, *ray_only.run_args()]) == ray_only


def test_stored_form_round_trips_and_leaves_defaults_out() -> None:
    stored = FULL.to_dict()
    assert stored["inputs"] == ["data/a.jsonl", "s3://bucket/b/*.parquet"]
    assert RunRequest.from_dict(stored) == FULL
    assert RunRequest("demo").to_dict() == {"pipeline": "demo"}


def test_a_record_queued_by_an_older_version_still_reads() -> None:
    older = {
        "pipeline": "/abs/pipelines/demo.py",
        "profile": None,
        "inputs": ["a.jsonl"],
        "output": "out",
        "sets": [],
        "verify": None,
        "submit_to": "http://127.0.0.1:8265",  # not part of the request: the queue's
    }
    assert RunRequest.from_dict(older) == RunRequest(
        "/abs/pipelines/demo.py", None, ["a.jsonl"], "out"
    )


def test_objects_cannot_be_stored() -> None:
    with pytest.raises(UsageError, match="profile object cannot be queued"):
        RunRequest("demo", Profile()).to_dict()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"verify": "sha1"}, "verify must be one of size, full"),
        ({"executor": "dask"}, "unknown executor 'dask': choose one of local, ray"),
        ({"inputs": "data/a.jsonl"}, "inputs must be a list of strings"),
    ],
)
def test_bad_fields_are_refused_by_name(changes: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RunRequest("demo", **changes)  # type: ignore[arg-type]
