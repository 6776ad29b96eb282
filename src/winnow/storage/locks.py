"""The pipeline lock: one run of a pipeline per state at a time.

A lock is the object ``<state>/locks/<pipeline>.json`` holding its holder
(job id, host, pid, start time) and a lease expiry. It is created with an
exclusive write: ``O_EXCL`` on a local disk, a conditional PUT
(``If-None-Match: *``) on S3. The holder renews the lease while it runs. A lock
is stale when its holder's process is gone (same host) or its lease expired
(any host); a stale lock is taken over by removing it and creating a new one
exclusively, so of two contenders only one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from winnow.errors import StateError
from winnow.storage.fs import is_local, join, refresh, to_url
from winnow.storage.liveness import Liveness, liveness

DEFAULT_LEASE_S = 120.0


class LockHeld(StateError):
    """Another live run holds the pipeline lock (exit 2)."""


@dataclass
class LockInfo:
    """What a pipeline lock file holds: who holds it and until when.

    Attributes:
        pipeline: the pipeline it locks.
        job_id: the holder's job.
        host: the holder's host name.
        pid: the holder's process id (on ``host``).
        started_at: when it was taken (epoch seconds).
        lease_expires: when it goes stale unless renewed (epoch seconds).
        token: a random id of this acquisition: only its holder releases or
            renews it.
    """

    pipeline: str
    job_id: str
    host: str
    pid: int
    started_at: float
    lease_expires: float
    token: str

    def describe(self) -> str:
        """The holder in words, for messages: job, host, pid, start and lease expiry."""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return (
            f"job {self.job_id} on host {self.host}, pid {self.pid}, started {started}, "
            f"lease until {time.strftime('%H:%M:%S', time.localtime(self.lease_expires))}"
        )

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this lock no longer protects a live run, or None when it may."""
        now = time.time() if now is None else now
        if liveness(self.pid, self.host) is Liveness.GONE:
            return f"its process {self.pid} on {self.host} is gone"
        if now > self.lease_expires:
            return f"its lease expired {now - self.lease_expires:.0f}s ago"
        return None


class LockStore:
    """Pipeline locks under ``<state>/locks/``."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root

    def path(self, pipeline: str) -> str:
        """The lock file of ``pipeline``.

        Raises:
            StateError: ``pipeline`` is not a name that can be a file name.
        """
        if not pipeline or "/" in pipeline or pipeline.startswith("."):
            raise StateError(f"{pipeline!r} is not a pipeline name")
        return join(self.root, "locks", f"{pipeline}.json")

    def read(self, pipeline: str) -> LockInfo | None:
        """Who holds ``pipeline``'s lock, or None if no one; a torn lock file reads as expired."""
        path = self.path(pipeline)
        refresh(self.fs, path)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            return LockInfo(**json.loads(data))
        except (ValueError, TypeError):
            # A torn or foreign lock file: treat it as expired, not as a holder.
            return LockInfo(pipeline, "unknown", "unknown", 0, 0.0, 0.0, "")

    def list(self) -> list[LockInfo]:
        """Every lock in this state, sorted by pipeline name."""
        base = join(self.root, "locks")
        try:
            names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        except FileNotFoundError:
            return []
        infos = [self.read(n[: -len(".json")]) for n in sorted(names) if n.endswith(".json")]
        return [i for i in infos if i is not None]

    def acquire(
        self, pipeline: str, job_id: str, lease_s: float = DEFAULT_LEASE_S
    ) -> tuple[Lock, str | None]:
        """Take the lock; return it and a note when a stale lock was taken over.

        Raises:
            LockHeld: a live run holds it (the message names the holder).
        """
        now = time.time()
        info = LockInfo(
            pipeline=pipeline,
            job_id=job_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            lease_expires=now + lease_s,
            token=uuid.uuid4().hex,
        )
        note = None
        for _ in range(3):
            if self._create(pipeline, info):
                return Lock(self, info, lease_s), note
            holder = self.read(pipeline)
            if holder is None:
                continue  # released in between: try again
            reason = holder.stale_reason()
            if reason is None:
                raise LockHeld(
                    f"pipeline {pipeline!r} is already running on this state: {holder.describe()}. "
                    "Wait for it, or if it is truly dead run "
                    f"`winnow lock release {pipeline} --force`."
                )
            note = f"took over a stale lock on {pipeline!r} ({reason}): {holder.describe()}"
            self._remove_if(pipeline, holder.token)
        raise LockHeld(f"pipeline {pipeline!r}: could not take its lock; another run raced for it")

    def release(self, pipeline: str, token: str | None = None) -> bool:
        """Remove the lock (only if ``token`` matches, when given); True if removed."""
        if token is None:
            return self._remove(pipeline)
        return self._remove_if(pipeline, token)

    def renew(self, info: LockInfo, lease_s: float) -> bool:
        """Extend the lease if we still hold the lock."""
        current = self.read(info.pipeline)
        if current is None or current.token != info.token:
            return False
        info.lease_expires = time.time() + lease_s
        self._write(self.path(info.pipeline), info)
        return True

    # -- primitives --------------------------------------------------------
    def _create(self, pipeline: str, info: LockInfo) -> bool:
        path = self.path(pipeline)
        data = json.dumps(asdict(info)).encode()
        if is_local(self.fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        if "s3" in _protocols(self.fs):
            try:
                self.fs.pipe_file(path, data, mode="create")
            except (FileExistsError, OSError) as exc:
                if _precondition_failed(exc):
                    return False
                raise
            return True
        # Other backends (memory://, tests): check then write, one process only.
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def _write(self, path: str, info: LockInfo) -> None:
        self.fs.pipe_file(path, json.dumps(asdict(info)).encode())

    def _remove_if(self, pipeline: str, token: str) -> bool:
        current = self.read(pipeline)
        if current is None or current.token != token:
            return False
        return self._remove(pipeline)

    def _remove(self, pipeline: str) -> bool:
        try:
            self.fs.rm_file(self.path(pipeline))
        except FileNotFoundError:
            return False
        return True

    def display(self, pipeline: str) -> str:
        """The lock file's URL, for messages."""
        return to_url(self.fs, self.path(pipeline))


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _precondition_failed(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):
        return True
    text = f"{exc} {exc.__cause__ or ''}"
    return "PreconditionFailed" in text or "412" in text or "ConditionalRequestConflict" in text


class Lock:
    """A held pipeline lock; renews its lease in a background thread until released."""

    def __init__(self, store: LockStore, info: LockInfo, lease_s: float) -> None:
        self.store = store
        self.info = info
        self.lease_s = lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="winnow-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with contextlib.suppress(OSError):
                self.store.renew(self.info, self.lease_s)

    def release(self) -> None:
        """Stop renewing and remove the lock if it is still ours."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.store.release(self.info.pipeline, self.info.token)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
