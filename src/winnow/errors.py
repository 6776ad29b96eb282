"""Winnow's small error hierarchy.

Every error names the thing that went wrong and the fix. The CLI maps these
types to exit codes in one place (``cli.main``): usage and configuration errors
exit 2, job failures exit 1.
"""

from __future__ import annotations


class WinnowError(Exception):
    """Base of every error Winnow raises on purpose."""

    exit_code = 1


class UsageError(WinnowError, ValueError):
    """Bad invocation or configuration: nothing was written. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A profile, pipeline or `--set` value is invalid."""


class PipelineNotFound(UsageError, LookupError):
    """No pipeline module matches the name or path given."""


class InputError(UsageError, FileNotFoundError):
    """Input is missing, unreadable or of an unsupported format."""


class StateError(WinnowError, OSError):
    """The state root cannot be read or written, or is of an unknown version."""

    exit_code = 2


class StorageFailed(WinnowError, OSError):
    """A store refused a write for good (full, read-only, over quota): the job stops. Exit 1."""


class IntegrityError(WinnowError):
    """An artifact read back from storage does not match what was written."""


class StageFailed(WinnowError, RuntimeError):
    """A stage raised for a batch; carries the remote traceback text."""

    def __init__(self, message: str, error_type: str = "", traceback: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.traceback = traceback


class Interrupted(WinnowError):
    """The run was stopped by SIGINT/SIGTERM; committed work stays committed."""

    exit_code = 130
