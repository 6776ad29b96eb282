"""The pipeline lock in memory, on a local disk and on S3 (moto on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from tests.storage.conftest import Backend, peer
from winnow.storage.fs import resolve
from winnow.storage.locks import LockHeld, LockStore


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> LockStore:
    if request.param == "memory":
        b = Backend(f"memory://locks-{uuid.uuid4().hex}/state", {})
    elif request.param == "file":
        b = Backend((tmp_path / "state").as_uri(), {})
    else:
        b = Backend(
            f"s3://{request.getfixturevalue('s3_bucket')}/state",
            {
                "client_kwargs": {"endpoint_url": request.getfixturevalue("s3_server")},
                "key": "winnow-test-key",
                "secret": "winnow-test-secret",
            },
        )
    request.node.backend = b
    return LockStore(*resolve(b.url, b.storage_options))


def other(request: pytest.FixtureRequest) -> LockStore:
    """The same locks through a second filesystem instance (another process's view)."""
    b = peer(request.node.backend)
    return LockStore(*resolve(b.url, b.storage_options))


def test_second_run_is_refused_naming_the_holder(store: LockStore, request):
    lock, note = store.acquire("demo", "job-1")
    assert note is None
    with pytest.raises(LockHeld) as err:
        other(request).acquire("demo", "job-2")
    message = str(err.value)
    assert "job-1" in message and str(lock.info.pid) in message and lock.info.host in message
    assert "winnow lock release demo --force" in message
    lock2, _ = other(request).acquire("other-pipeline", "job-3")  # a different pipeline is free
    lock2.release()
    lock.release()
    again, note = other(request).acquire("demo", "job-4")
    assert note is None
    again.release()
    assert store.read("demo") is None


def test_lock_of_a_dead_process_is_stale_and_taken_over(store: LockStore, request):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock, _ = store.acquire("demo", "job-dead")
    lock._stop.set()  # the holder dies: no more renewals, no release
    info = lock.info
    info.pid = dead.pid
    store._write(store.path("demo"), info)
    lock2, note = other(request).acquire("demo", "job-new")
    assert note is not None and "stale" in note and f"process {dead.pid}" in note
    assert other(request).read("demo").job_id == "job-new"
    lock2.release()


def test_expired_lease_of_another_host_is_taken_over(store: LockStore, request):
    lock, _ = store.acquire("demo", "job-far", lease_s=60)
    lock._stop.set()
    info = lock.info
    info.host = "some-other-host"
    store._write(store.path("demo"), info)
    with pytest.raises(LockHeld, match="some-other-host"):
        other(request).acquire("demo", "job-x")  # lease still valid: another host may be alive
    info.lease_expires = time.time() - 5
    store._write(store.path("demo"), info)
    lock2, note = other(request).acquire("demo", "job-y")
    assert note is not None and "lease expired" in note
    lock2.release()


def test_lease_is_renewed_while_held(store: LockStore):
    # The lease is renewed every lease_s / 3; 2 s leaves a loaded CI machine room to
    # schedule the renewal thread, while the check still runs past the first expiry.
    lock, _ = store.acquire("demo", "job-1", lease_s=2.0)
    first = store.read("demo").lease_expires
    time.sleep(max(0.0, first - time.time()) + 0.3)
    renewed = store.read("demo")
    assert renewed.lease_expires > first
    assert renewed.stale_reason() is None
    lock.release()
    assert store.list() == []


def test_release_only_removes_our_own_lock(store: LockStore, request):
    lock, _ = store.acquire("demo", "job-1")
    assert not store.release("demo", token="someone-else")
    assert store.read("demo") is not None
    [listed] = other(request).list()
    assert listed.job_id == "job-1"
    assert json.loads(store.fs.cat_file(store.path("demo")))["job_id"] == "job-1"
    lock.release()
