"""What to run: one value for every way of asking for a run.

Shared by `winnow run`, `plan`, `submit`, `enqueue`, the gateway's queue and
the Python API.

A request is what a user asked for, before anything is resolved: the
pipeline and profile by name (or as objects, from Python), the inputs as
given, the ``--set`` overrides. ``api.resolve_session`` turns it into a
session (loaded, validated, defaults applied).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from winnow.errors import UsageError
from winnow.pipeline import Pipeline
from winnow.profile import Profile

VERIFY_MODES = ("size", "full")  # how committed artifacts are checked before a skip


@dataclass(frozen=True)
class RunRequest:
    """A run as asked for.

    Args:
        pipeline: a pipeline name (``pipelines/<name>.py``), a path to one, or a
            ``Pipeline``.
        profile: a profile name (the project's ``profiles/<name>.toml``, else a
            packaged one), a TOML path, a ``Profile``, or None for the default.
        inputs: files, folders or globs (any fsspec URL); empty: the
            pipeline's default or sample inputs.
        output: where artifacts and manifests go (default ``.winnow/output``).
        state: the state root URL (default ``$WINNOW_STATE`` or ``.winnow/state/v1``).
        sets: ``KEY=VALUE`` overrides of profile keys or ``<stage>.<param>``.
        verify: how committed artifacts are checked before a skip: ``size``
            (default) or ``full`` (re-hash).
        rerun: a stage whose every batch is recomputed, with the stages after it.
        executor: ``ray`` (stage actors on Ray) or ``local`` (in this process, no Ray).
        data: rows in memory to run over instead of ``inputs`` (Python only): a
            ``pyarrow.Table``, ``pandas.DataFrame``, ``ray.data.Dataset`` or
            Hugging Face ``datasets.Dataset``, committed as input chunks when
            the request is resolved (see ``sources.memory``). A request with
            data cannot be queued or submitted.
    """

    pipeline: str | Pipeline
    profile: str | Profile | None = None
    inputs: tuple[str, ...] = ()
    output: str | None = None
    state: str | None = None
    sets: tuple[str, ...] = ()
    verify: str | None = None
    rerun: str | None = None
    executor: str = "ray"
    data: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Lists are accepted (click and JSON give lists); the request stays immutable.
        object.__setattr__(self, "inputs", _strings("inputs", self.inputs))
        object.__setattr__(self, "sets", _strings("sets", self.sets))
        if self.verify is not None and self.verify not in VERIFY_MODES:
            raise UsageError(
                f"verify must be one of {', '.join(VERIFY_MODES)}, not {self.verify!r}"
            )
        from winnow.execution.executor import check_executor  # the registry of executors

        check_executor(self.executor)
        if self.data is not None and self.inputs:
            raise UsageError(
                "a run takes input data in memory or input files, not both: "
                "pass input=... or inputs=[...]"
            )

    def but(self, **changes: Any) -> RunRequest:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (a queued job's ``request``): strings and lists, defaults left out.

        Raises:
            UsageError: the pipeline or profile is an object, or the input is
                data in memory, which cannot be stored.
        """
        self._check_no_data()
        for name in ("pipeline", "profile"):
            if not isinstance(getattr(self, name), str | None):
                raise UsageError(
                    f"a run request with a {name} object cannot be queued or submitted: "
                    f"name the {name} (or its file) instead"
                )
        defaults = RunRequest(pipeline="")
        stored = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(self).items()
            if k != "data" and (k == "pipeline" or v != getattr(defaults, k))
        }
        return stored

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRequest:
        """The request a stored ``to_dict`` (or an older queued record) holds; other keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    def run_args(self) -> list[str]:
        """The ``winnow run`` options that ask for this request (after the pipeline argument).

        Raises:
            UsageError: the input is data in memory, which no option can carry.
        """
        self._check_no_data()
        args: list[str] = []
        for flag, value in (
            ("--profile", self.profile),
            ("--output", self.output),
            ("--state", self.state),
            ("--verify", self.verify),
            ("--rerun", self.rerun),
        ):
            if value is not None:
                args += [flag, str(value)]
        for url in self.inputs:
            args += ["--input", url]
        for item in self.sets:
            args += ["--set", item]
        if self.executor != "ray":
            args += ["--executor", self.executor]
        return args

    def _check_no_data(self) -> None:
        if self.data is not None:
            raise UsageError(
                "a run over data in memory cannot be queued or submitted: write the data to "
                "files (Parquet) where the cluster can read them and pass those as inputs"
            )


def _strings(name: str, values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise UsageError(f"{name} must be a list of strings, not the string {values!r}")
    return tuple(str(v) for v in values)
