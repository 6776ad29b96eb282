"""Stages: small typed classes that transform Arrow record batches.

A stage knows nothing of Ray, storage, keys or checkpoints. Simple stages are
dataclasses whose fields are their parameters; the executor calls ``setup()``
once per actor, ``process()`` once per batch and ``teardown()`` at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from winnow.errors import ConfigError
from winnow.fingerprint import code_digest


@dataclass(frozen=True)
class Resources:
    """What one actor of a stage asks the cluster for.

    Args:
        num_cpus: CPUs per actor (fractions allowed).
        num_gpus: GPUs per actor (fractions allowed).
        memory_mb: memory reserved per actor, in MiB (0: no reservation).
        min_actors: smallest pool size.
        max_actors: largest pool size.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 0
    min_actors: int = 1
    max_actors: int = 1

    def with_(self, **changes: Any) -> Resources:
        """Return a copy with ``changes`` applied; the original is untouched."""
        return dataclasses.replace(self, **changes)


class Stage:
    """Base class of every stage.

    Subclasses set ``name`` and ``version`` and override ``process``. Their
    dataclass fields are their parameters. The fingerprint, which keys every
    batch the stage commits, covers the name, the version, the parameters and
    the code (see ``winnow.fingerprint``), so editing any of them recomputes
    the stage and those after it. Two class attributes say when you know better:

    * ``neutral_params``: parameters that do not change the output (a batch
      size, a device, a log level), left out of the fingerprint;
    * ``pin_to_version``: leave the code out of the fingerprint; only bumping
      ``version`` (or a parameter) recomputes. For stages whose code changes
      often without changing what they output.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    resources: ClassVar[Resources] = Resources()
    neutral_params: ClassVar[tuple[str, ...]] = ()
    pin_to_version: ClassVar[bool] = False

    def setup(self) -> None:
        """Load models or other per-actor state; called once per actor."""

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Transform one batch; may drop rows, add columns, or return empty."""
        raise NotImplementedError(f"stage {self.stage_name!r} does not implement process()")

    def teardown(self) -> None:
        """Release what ``setup`` acquired."""

    def batch_metrics(self) -> dict[str, Any]:
        """Small facts about the last ``process`` call (device, GPU use), kept in its checkpoint."""
        return {}

    @property
    def stage_name(self) -> str:
        """The stage's ``name``, or its class name in lower case when it has none."""
        return self.name or type(self).__name__.lower()

    def params(self) -> dict[str, Any]:
        """The stage's parameters: its dataclass fields, in declaration order."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def fingerprint_parts(self) -> dict[str, Any]:
        """What the fingerprint covers.

        Name, version, parameters (less the neutral ones) and the code digest
        (``None`` when pinned to the version).

        Not the resources, and not the file or module the stage lives in.
        """
        params = self.params()
        unknown = sorted(set(self.neutral_params) - set(params))
        if unknown:
            raise ConfigError(
                f"stage {self.stage_name!r} declares neutral_params {', '.join(unknown)} that are "
                f"not among its parameters ({', '.join(params) or 'none'}); fix the names"
            )
        return {
            "name": self.stage_name,
            "version": str(self.version),
            "params": {k: _canonical(v) for k, v in params.items() if k not in self.neutral_params},
            "code": None if self.pin_to_version else code_digest(type(self)),
        }

    def fingerprint(self) -> str:
        """SHA-256 over ``fingerprint_parts()``."""
        return fingerprint_of(self.fingerprint_parts())

    def with_params(self, **changes: Any) -> Stage:
        """Return a copy with parameters changed, coercing strings to field types."""
        if not dataclasses.is_dataclass(self):
            raise ConfigError(
                f"stage {self.stage_name!r} has no parameters to set; "
                "declare it as a @dataclass to make its fields settable"
            )
        fields = {f.name: f for f in dataclasses.fields(self)}
        coerced = {}
        for key, value in changes.items():
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise ConfigError(
                    f"stage {self.stage_name!r} has no parameter {key!r} (its parameters: {known})"
                )
            current = getattr(self, key)
            coerced[key] = _coerce(self.stage_name, key, value, current)
        return dataclasses.replace(self, **coerced)


def fingerprint_of(parts: dict[str, Any]) -> str:
    """The fingerprint of a stage's ``fingerprint_parts()``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"stage/v2|{text}".encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """A parameter value as stable JSON: user functions and classes by their code."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (type, types.FunctionType)):
        return {"code": code_digest(value)}
    return repr(value)


def _coerce(stage: str, key: str, value: Any, current: Any) -> Any:
    """Convert a `--set` string to the type of the parameter's current value."""
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    try:
        if isinstance(current, bool):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, (list, tuple, dict)):
            parsed = json.loads(value)
            return type(current)(parsed) if isinstance(current, tuple) else parsed
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"--set {stage}.{key}={value!r}: expected a value of type "
            f"{type(current).__name__} (current value {current!r})"
        ) from exc
    return value


__all__ = ["Resources", "Stage", "dataclass", "field"]
