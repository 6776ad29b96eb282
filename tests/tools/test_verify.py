"""`verify` covers everything the state references (issue 22, hole 4).

A small state built by hand on memory, file and S3: a flipped byte in a
quarantine artifact is found by `verify --full` and marked; a missing
quarantine artifact and broken manifests are reported. The same on a real run
through the command line: tests/e2e/test_verify_coverage.py.
"""

from __future__ import annotations

import json

import pyarrow as pa

from tests.storage.conftest import Backend, backend  # noqa: F401  (memory, file, S3)
from winnow.records import BatchStatus
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.fs import join, to_url, write_atomic
from winnow.storage.state import State
from winnow.tools.verify import MANIFEST_FIX, verify_state

FAILED, SUCCEEDED = BatchStatus.FAILED, BatchStatus.SUCCEEDED

BAD = b'{"file":"in.jsonl","row":3,"error":"JSONDecodeError: x","raw":"{oops"}\n'


def hand_built(where: Backend) -> dict:
    """One batch of one stage with an output and a quarantine artifact, and a job."""
    state = State(join(where.url, "state"), where.storage_options)
    store = ArtifactStore(join(where.url, "out", "artifacts"), where.storage_options)
    output = store.put(pa.record_batch({"id": [1, 2]}), "parquet")
    quarantine = store.put_bytes(BAD, "jsonl", expected_records=1)
    record = {
        "stage": "first",
        "key": "a" * 64,
        "status": SUCCEEDED,
        "attempt": 1,
        "artifact": output.to_dict(),
        "quarantine": {"count": 1, "artifact": quarantine.to_dict(), "errors": {"X": 1}},
    }
    state.checkpoints(job_id="j1", flush_every=1).append(record)
    manifest = join(store.root.rsplit("/", 1)[0], "manifests", "p", "j1.json")
    body = {"job_id": "j1", "batches": [{"batch": "b" * 64, "artifact": output.to_dict()}]}
    write_atomic(store.fs, manifest, json.dumps(body).encode())
    state.write_job({"job_id": "j1", "manifest": to_url(store.fs, manifest)})
    return {"state": state, "store": store, "output": output, "quarantine": quarantine}


def test_verify_full_finds_and_marks_a_flipped_byte_in_a_quarantine_artifact(
    backend: Backend,  # noqa: F811
):
    built = hand_built(backend)
    state, store, ref = built["state"], built["store"], built["quarantine"]
    assert verify_state(state, full=True)["mismatches"] == []
    path = store.path_of(ref.uri)
    flipped = bytearray(BAD)
    flipped[40] ^= 0x01
    store.fs.pipe_file(path, bytes(flipped))

    assert verify_state(state)["mismatches"] == []  # same size: only --full can see it
    result = verify_state(state, full=True)
    [problem] = result["mismatches"]
    assert problem["stage"] == "first" and problem["key"] == "a" * 64
    assert problem["artifact"] == "quarantine" and problem["uri"] == ref.uri
    assert "sha256" in problem["problem"]
    marked = state.checkpoints().load("first").records["a" * 64]
    assert marked["status"] == FAILED and marked["error"]["type"] == "IntegrityError"
    assert marked["error"]["message"].startswith("quarantine artifact")


def test_verify_finds_a_missing_quarantine_artifact_and_manifest_problems(
    backend: Backend,  # noqa: F811
):
    built = hand_built(backend)
    state, store = built["state"], built["store"]
    good = verify_state(state, mark=False)
    assert good["checked"] == 2 and good["manifests"] == 1 and good["manifest_problems"] == []
    store.fs.rm_file(store.path_of(built["quarantine"].uri))
    manifests = join(store.root.rsplit("/", 1)[0], "manifests", "p")
    write_atomic(store.fs, join(manifests, "j2.json"), b'{"job_id": "j2", "batc')
    state.write_job({"job_id": "j2", "manifest": to_url(store.fs, join(manifests, "j2.json"))})
    state.write_job({"job_id": "j3", "manifest": to_url(store.fs, join(manifests, "gone.json"))})
    wrong = {**built["output"].to_dict(), "bytes": built["output"].bytes + 1}
    body = {"job_id": "j4", "batches": [{"batch": "c" * 64, "artifact": wrong}, {"artifact": None}]}
    write_atomic(store.fs, join(manifests, "j4.json"), json.dumps(body).encode())
    state.write_job({"job_id": "j4", "manifest": to_url(store.fs, join(manifests, "j4.json"))})

    result = verify_state(state)

    [missing] = result["mismatches"]
    assert (missing["artifact"], missing["key"]) == ("quarantine", "a" * 64)
    assert "missing" in missing["problem"]
    problems = {p["job_id"]: p for p in result["manifest_problems"]}
    assert set(problems) == {"j2", "j3", "j4"} and result["manifests"] == 4
    assert "does not parse" in problems["j2"]["problem"]
    assert problems["j3"]["problem"] == "the manifest is missing"
    assert problems["j4"]["batch"] == "c" * 64 and "bytes" in problems["j4"]["problem"]
    assert all(p["fix"] == MANIFEST_FIX for p in problems.values())
    assert state.checkpoints().load("first").records["a" * 64]["status"] == FAILED
