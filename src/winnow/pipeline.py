"""Pipelines: an ordered chain of stages plus how to read their input.

A pipeline is a module under ``pipelines/`` defining ``pipeline = Pipeline(...)``.
``winnow run NAME`` finds ``pipelines/NAME.py`` from the working directory (or
takes a path to a ``.py`` file). Nothing here knows Ray or storage.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from winnow.errors import ConfigError, PipelineNotFound
from winnow.stage import Resources, Stage


@dataclass(frozen=True)
class StageSpec:
    """A stage as the executor runs it: the stage object plus its resources."""

    stage: Stage
    resources: Resources

    @property
    def name(self) -> str:
        """The stage's name (``Stage.stage_name``)."""
        return self.stage.stage_name


@dataclass(frozen=True)
class Pipeline:
    """An ordered chain of stages.

    Args:
        name: the pipeline's name (used for locks, job records, manifests).
        stages: the stages, first to last.
        schema: schema of the source records (JSONL/CSV are read with it);
            ``None`` infers it from the data.
        sample_inputs: optional callable ``(directory) -> list[str]`` that
            writes sample input deterministically; used when no ``--input``.
        default_inputs: inputs used when no ``--input`` and no sample generator.
    """

    name: str
    stages: Sequence[Stage]
    schema: pa.Schema | None = None
    sample_inputs: Callable[[str], list[str]] | None = None
    default_inputs: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [s.stage_name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"pipeline {self.name!r} has two stages named {', '.join(dupes)}; "
                "give each stage a distinct `name`"
            )
        if not names:
            raise ConfigError(f"pipeline {self.name!r} has no stages; add at least one")

    def stage_names(self) -> list[str]:
        """The stages' names, first to last."""
        return [s.stage_name for s in self.stages]

    def stage_index(self, name: str, option: str = "--rerun") -> int:
        """Position of the stage called ``name``; a ConfigError naming ``option`` if none."""
        names = self.stage_names()
        if name not in names:
            raise ConfigError(
                f"{option} {name!r}: pipeline {self.name!r} has no such stage "
                f"(its stages: {', '.join(names)})"
            )
        return names.index(name)

    def with_stage_params(self, overrides: dict[str, dict[str, Any]]) -> Pipeline:
        """Return a copy where each named stage has its parameters replaced."""
        known = set(self.stage_names())
        for stage_name in overrides:
            if stage_name not in known:
                raise ConfigError(
                    f"pipeline {self.name!r} has no stage {stage_name!r} "
                    f"(its stages: {', '.join(self.stage_names())})"
                )
        stages = [
            s.with_params(**overrides[s.stage_name]) if s.stage_name in overrides else s
            for s in self.stages
        ]
        return replace(self, stages=tuple(stages))


def find_pipeline_file(name_or_path: str, search_dirs: Sequence[str] = ()) -> Path:
    """Resolve a pipeline by path or by name under ``pipelines/``."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".py" or os.sep in name_or_path:
        if candidate.is_file():
            return candidate.resolve()
        raise PipelineNotFound(
            f"pipeline file {name_or_path!r} does not exist; pass an existing .py file "
            "or the name of a module under pipelines/"
        )
    dirs = [*search_dirs, os.path.join(os.getcwd(), "pipelines")]
    for directory in dirs:
        path = Path(directory) / f"{name_or_path}.py"
        if path.is_file():
            return path.resolve()
    available = sorted(
        {p.stem for d in dirs if Path(d).is_dir() for p in Path(d).glob("*.py")} - {"__init__"}
    )
    hint = f" Available: {', '.join(available)}." if available else ""
    raise PipelineNotFound(
        f"no pipeline named {name_or_path!r} in {', '.join(map(str, dirs))}.{hint} "
        "Run from the project root, or pass a path to the pipeline's .py file."
    )


def load_pipeline(name_or_path: str, search_dirs: Sequence[str] = ()) -> Pipeline:
    """Import a pipeline module and return its ``pipeline`` attribute."""
    path = find_pipeline_file(name_or_path, search_dirs)
    module_name = f"winnow_pipelines.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineNotFound(f"cannot import pipeline file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    pipeline = getattr(module, "pipeline", None)
    if not isinstance(pipeline, Pipeline):
        raise PipelineNotFound(
            f"{path} defines no `pipeline = Pipeline(...)`; add one at module level"
        )
    return pipeline
