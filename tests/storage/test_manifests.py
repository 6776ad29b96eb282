"""storage/manifests.py: a run manifest is written a batch at a time, as one JSON object."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.storage.conftest import Backend
from winnow.storage.manifests import encode_manifest, read_manifest, write_manifest


def entry(i: int) -> dict[str, Any]:
    return {
        "batch": f"{i:064x}",
        "key": f"{i + 1:064x}",
        "source": {"file": 'in/a "quoted"\nname.jsonl', "start": i, "stop": i + 1},
        "artifact": None if i % 2 else {"uri": f"file:///a/{i}.parquet", "bytes": 10 + i},
        "rows": None if i % 2 else [1, {}, []],
    }


@pytest.mark.parametrize("batches", [0, 1, 3])
def test_a_manifest_in_chunks_is_what_one_json_dumps_writes(batches: int):
    body = {
        "job_id": "j",
        "pipeline": "p",
        "stage": "s",
        "batches": [entry(i) for i in range(batches)],
    }
    chunks = list(encode_manifest({**body, "batches": iter(body["batches"])}))
    assert b"".join(chunks) == json.dumps(body, indent=1).encode()
    assert len(chunks) == batches + 2  # one per entry: never the whole manifest at once


def test_a_manifest_written_from_a_generator_reads_back(backend: Backend):
    body = {"job_id": "j1", "pipeline": "p", "stage": "s"}
    url = write_manifest(
        backend.url, backend.storage_options, {**body, "batches": (entry(i) for i in range(5))}
    )
    assert read_manifest(url, backend.storage_options, fresh=True) == {
        **body,
        "batches": [entry(i) for i in range(5)],
    }
