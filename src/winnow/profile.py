"""Profiles: TOML files validated by pydantic.

``--profile`` takes a name or a path to a TOML file. A name is looked up in
the project's ``profiles/`` folder (the working directory's), then among the
profiles that ship inside the package (``winnow/profiles/``: ``local-cpu``,
``gpu-single``, ``high-throughput``), so a project's own file overrides a
packaged one of the same name. Unknown keys are errors naming the key and the
file. CLI flags and ``--set`` override profile values; resource overrides make
copies of the stages' declarations.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from winnow.errors import ConfigError
from winnow.pipeline import Pipeline, StageSpec


class StageOverride(BaseModel):
    """Per-stage settings in a profile's ``[stages.<name>]`` table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory_mb: int | None = Field(default=None, ge=0)
    min_actors: int | None = Field(default=None, ge=1)
    max_actors: int | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class LineageSettings(BaseModel):
    """OpenLineage events, a profile's ``[lineage]`` table (see ``winnow.lineage``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(
        default=None,
        description="None (auto): on when OpenLineage is configured the OpenLineage way "
        "(OPENLINEAGE_URL, OPENLINEAGE_CONFIG, OPENLINEAGE__TRANSPORT__*, openlineage.yml)",
    )
    namespace: str = Field(default="winnow", min_length=1, description="the jobs' namespace")
    transport: dict[str, Any] = Field(
        default_factory=dict,
        description="an OpenLineage transport config (as under `transport:` in openlineage.yml); "
        "empty: OpenLineage's own configuration",
    )
    wait_s: float = Field(
        default=5.0,
        ge=0,
        description="seconds a run (or export) waits, once its work is done, for its events "
        "to be sent; an event still unsent then (a backend that does not answer) is given up",
    )


class Profile(BaseModel):
    """How a pipeline runs: batch sizes, pools, formats, failure policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    description: str = ""
    batch_rows: int = Field(default=10_000, ge=1)
    max_in_flight: int = Field(default=8, ge=1, description="batches in flight across stages")
    reader_actors: int = Field(default=1, ge=1)
    artifact_format: Literal["parquet", "ipc", "jsonl"] = "parquet"
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    on_bad_record: Literal["fail", "skip", "quarantine"] = "quarantine"
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    verify: Literal["size", "full"] = Field(
        default="size", description="how a rerun checks a committed artifact before skipping"
    )
    checkpoint_flush_every: int = Field(default=256, ge=1)
    straggler_factor: float = Field(
        default=5.0,
        gt=0,
        description="a batch running this many times its stage's median batch latency so "
        "far (and at least straggler_min_s) is flagged as a straggler",
    )
    straggler_min_s: float = Field(
        default=10.0, ge=0, description="no batch is flagged before it has run this long"
    )
    stall_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="a batch running this long is abandoned: its actor is killed (and "
        "restarted) and the batch retried, counted against max_attempts; off (None) by default",
    )
    speculate: bool = Field(
        default=True,
        description="run a flagged straggler a second time on an idle actor of its stage "
        "(when the stage's queue is empty); the first verified result is committed",
    )
    ray_num_cpus: int | None = Field(default=None, ge=1)
    partition_mb: int = Field(
        default=512,
        ge=1,
        description="memory budget of one grouping-stage partition: a grouping stage gets at "
        "least its input's estimated size over this many partitions",
    )
    ray_dashboard: bool = Field(
        default=False,
        description="start the embedded Ray with its dashboard on 127.0.0.1 (winnow run "
        "--dashboard) and print its URL",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict)
    lineage: LineageSettings = Field(default_factory=LineageSettings)
    stages: dict[str, StageOverride] = Field(default_factory=dict)

    def apply(self, pipeline: Pipeline) -> list[StageSpec]:
        """Resolve the pipeline's stages under this profile (copies, never mutation)."""
        known = set(pipeline.stage_names())
        params = {n: o.params for n, o in self.stages.items() if o.params and n in known}
        if params:
            pipeline = pipeline.with_stage_params(params)
        specs = []
        for stage in pipeline.stages:
            override = self.stages.get(stage.stage_name, StageOverride())
            if not override.enabled:
                continue
            changes = {
                k: v
                for k, v in override.model_dump(
                    include={"num_cpus", "num_gpus", "memory_mb", "min_actors", "max_actors"}
                ).items()
                if v is not None
            }
            resources = type(stage).resources.with_(**changes)
            if resources.max_actors < resources.min_actors:
                resources = resources.with_(max_actors=resources.min_actors)
            specs.append(StageSpec(stage=stage, resources=resources))
        if not specs:
            raise ConfigError(f"profile {self.name!r} disables every stage of {pipeline.name!r}")
        return specs

    def redacted(self) -> dict[str, Any]:
        """The profile as a dict with storage secrets masked, for records and logs."""
        data = self.model_dump()
        data["storage_options"] = redact(data["storage_options"])
        data["lineage"]["transport"] = redact(data["lineage"]["transport"])
        return data


_SECRET_HINTS = ("secret", "token", "password", "key", "credential", "session")


def unused_stage_tables(profile: Profile, pipeline: Pipeline) -> list[str]:
    """Stage tables of a shared profile that this pipeline does not have."""
    return sorted(set(profile.stages) - set(pipeline.stage_names()))


def check_set_stages(sets: list[str], pipeline: Pipeline) -> None:
    """``--set <stage>.<param>`` must name a stage of the pipeline (a typo is an error)."""
    known = pipeline.stage_names()
    for item in sets:
        key = item.split("=", 1)[0].strip()
        if "." in key and key.split(".", 1)[0] not in known:
            raise ConfigError(
                f"--set {item!r}: pipeline {pipeline.name!r} has no stage "
                f"{key.split('.', 1)[0]!r}; its stages are {', '.join(known)}"
            )


def redact(options: Any) -> Any:
    """Mask values whose key looks secret, recursively."""
    if isinstance(options, dict):
        return {
            k: "***" if any(h in str(k).lower() for h in _SECRET_HINTS) else redact(v)
            for k, v in options.items()
        }
    if isinstance(options, list):
        return [redact(v) for v in options]
    return options


def packaged_profiles() -> Path:
    """The folder of the profiles that ship inside the package (``winnow/profiles/``).

    Raises:
        ConfigError: Winnow is installed somewhere that is not a folder on disk
            (a zip), where the packaged profiles cannot be named by path.
    """
    folder = resources.files("winnow") / "profiles"
    # A profile is named by its path (job records, `winnow submit` bundles the file),
    # so the folder must be one on disk, as it is in every pip or uv install.
    if not isinstance(folder, Path):
        raise ConfigError(
            f"the packaged profiles are not on disk ({folder}); install winnow as files "
            "(pip install, not a zip) or pass a path to a TOML file"
        )
    return folder


def profile_dirs(search_dirs: list[str] | None = None) -> list[Path]:
    """Where a profile name is looked up, first match wins.

    ``search_dirs``, then the project's ``./profiles``, then the packaged profiles.
    """
    project = Path(os.getcwd()) / "profiles"
    return [*(Path(d) for d in search_dirs or []), project, packaged_profiles()]


def find_profile_file(name_or_path: str, search_dirs: list[str] | None = None) -> Path:
    """The TOML file of a profile given by name or path.

    A value ending in ``.toml`` or holding a path separator is a path; any other
    is a name looked up as ``<name>.toml`` in ``search_dirs``, then in the
    project's ``./profiles``, then among the packaged profiles
    (:func:`profile_dirs`).

    Raises:
        ConfigError: no such file (the message lists the profiles available).
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or os.sep in name_or_path:
        if candidate.is_file():
            return candidate
        raise ConfigError(
            f"profile file {name_or_path!r} does not exist; pass an existing .toml file "
            "or a profile name"
        )
    dirs = profile_dirs(search_dirs)
    for directory in dirs:
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return path
    available = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    hint = f" Available: {', '.join(available)}." if available else ""
    raise ConfigError(
        f"no profile named {name_or_path!r} in {', '.join(map(str, dirs))}.{hint} "
        "Pass one of those names, put <name>.toml in ./profiles, or pass a path to a TOML file."
    )


def load_profile(name_or_path: str | None, search_dirs: list[str] | None = None) -> Profile:
    """Load and validate a profile; ``None`` gives the built-in defaults."""
    if name_or_path is None:
        return Profile()
    path = find_profile_file(name_or_path, search_dirs)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"profile {path}: cannot parse TOML ({exc}); fix the file") from exc
    data.setdefault("name", path.stem)
    return validate_profile(data, source=str(path))


def validate_profile(data: dict[str, Any], source: str) -> Profile:
    """Validate a profile's parsed TOML.

    Args:
        data: the profile's keys and values.
        source: where they came from, for the error message.

    Raises:
        ConfigError: unknown keys or bad values, every one named in one message.
    """
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {where!r}")
            else:
                problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(
            f"profile {source}: {'; '.join(problems)}. Fix these keys "
            "(see the packaged winnow/profiles/local-cpu.toml for every valid key)."
        ) from None


def apply_overrides(profile: Profile, sets: list[str]) -> Profile:
    """Apply ``--set key=value`` pairs: ``<stage>.<param>=v`` or a top-level key.

    A dotted key whose head is a stage name sets a stage parameter, except for
    the resource keys of ``[stages.<name>]`` (``num_cpus``, ``enabled``, ...).
    ``lineage=true|false`` turns OpenLineage events on or off (``--lineage``).
    """
    data = profile.model_dump()
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set quality.min_words=8")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            stage, param = key.split(".", 1)
            table = data["stages"].setdefault(stage, {})
            if param in StageOverride.model_fields and param != "params":
                table[param] = value
            else:
                table.setdefault("params", {})[param] = value
        elif key == "lineage":
            data["lineage"]["enabled"] = value
        elif key in Profile.model_fields and key != "stages":
            data[key] = value
        else:
            raise ConfigError(
                f"--set {item!r}: {key!r} is neither a profile key nor <stage>.<param>; "
                f"profile keys: {', '.join(k for k in Profile.model_fields if k != 'stages')}"
            )
    return validate_profile(data, source=f"{profile.name} with --set")
