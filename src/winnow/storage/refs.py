"""What the artifact store hands out.

References to verified artifacts, the files it holds, and what can be wrong
with a committed one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from winnow.errors import IntegrityError

_DIGEST = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: `$` also matches before "\n"


def is_digest(text: str) -> bool:
    """Whether ``text`` is a SHA-256 digest: 64 lowercase hex."""
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def check_digest(digest: str) -> str:
    """Reject anything but 64 lowercase hex, so no path can leave the store."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise IntegrityError(f"{digest!r} is not a SHA-256 digest (64 lowercase hex)")
    return digest


@dataclass(frozen=True)
class ArtifactRef:
    """What a checkpoint records about one verified artifact."""

    uri: str
    digest: str
    bytes: int
    records: int
    schema_fp: str
    format: str

    def to_dict(self) -> dict[str, Any]:
        """The reference as a checkpoint stores it."""
        return asdict(self)


class Fault(StrEnum):
    """What is wrong with a committed artifact (see :meth:`ArtifactStore.check`)."""

    MISSING = "missing"  # not in the store's listing
    WRONG_SIZE = "wrong size"  # listed, with another size than recorded
    UNVERIFIED = "unverified"  # a full check: missing, or it did not re-hash and decode


@dataclass(frozen=True)
class ArtifactProblem:
    """Why a committed artifact is no longer good: its fault, and a message naming it."""

    fault: Fault
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class StoredFile:
    """One file under an artifact store, as :meth:`ArtifactStore.files` found it."""

    path: str  # on the store's filesystem
    digest: str  # its name up to the first dot: a published artifact's SHA-256
    bytes: int
    modified: datetime | None  # None when the filesystem does not say
