"""How events name datasets and describe schemas and failures; the schema the tests
check events against rejects what the spec rejects."""

from __future__ import annotations

import json
import os
from typing import Any

import jsonschema
import pyarrow as pa
import pytest

from tests.lineage.openlineage_schema import RUN_EVENT
from winnow.lineage import events


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/data/in/a.jsonl", ("file", "/data/in/a.jsonl")),
        ("file:///data/in/a.jsonl", ("file", "/data/in/a.jsonl")),
        ("file://nas/data/a.jsonl", ("file://nas", "/data/a.jsonl")),
        ("s3://bucket/raw/a.parquet", ("s3://bucket", "raw/a.parquet")),
        ("s3a://bucket/raw/a.parquet", ("s3://bucket", "raw/a.parquet")),
        ("gs://bucket/raw/a.csv", ("gs://bucket", "raw/a.csv")),
        ("gcs://bucket/raw/a.csv", ("gs://bucket", "raw/a.csv")),
        ("memory://inputs/sha256-ab12", ("memory://inputs", "sha256-ab12")),
    ],
)
def test_dataset_names_follow_openlineage_naming(url: str, expected: tuple[str, str]) -> None:
    assert events.dataset_name(url) == expected


def test_a_relative_path_is_named_by_its_absolute_path() -> None:
    assert events.dataset_name("in/a.jsonl") == ("file", os.path.abspath("in/a.jsonl"))


def test_the_schema_facet_of_an_arrow_schema_nests_struct_fields() -> None:
    schema = pa.schema(
        [("id", pa.int64()), ("meta", pa.struct([("lang", pa.string()), ("score", pa.float32())]))]
    )
    facet = json.loads(json.dumps(_plain(events.schema_facet(schema))))
    assert facet["fields"][0] == {"name": "id", "type": "int64", "fields": []}
    assert [f["name"] for f in facet["fields"][1]["fields"]] == ["lang", "score"]
    assert facet["fields"][1]["fields"][1]["type"] == "float"


def test_a_failure_without_an_exception_is_told_from_the_records_errors() -> None:
    record = {
        "poison_batches": [{}, {}],
        "errors": {
            "ValueError": {
                "count": 2,
                "stages": ["clean", "clean"],
                "example": {"type": "ValueError", "message": "bad row"},
            }
        },
    }
    assert events.failure_message(record, None) == (
        "2 poison batch(es); ValueError x2 at clean: bad row",
        None,
    )
    record["error"] = {"type": "StorageFailed", "message": "disk full"}
    assert events.failure_message(record, None) == ("StorageFailed: disk full", None)
    message, stack = events.failure_message(record, KeyError("k")) or ("", None)
    assert message == "KeyError: 'k'" and stack is not None


def test_the_end_of_a_run_follows_the_job_status_and_its_exception() -> None:
    assert events.end_state("SUCCEEDED", None) == "COMPLETE"
    assert events.end_state("FAILED", None) == "FAIL"
    assert events.end_state("CANCELLED", None) == "ABORT"
    assert events.end_state("FAILED", KeyboardInterrupt()) == "ABORT"
    assert events.end_state("RUNNING", RuntimeError("x")) == "FAIL"


GOOD: dict[str, Any] = {
    "eventType": "START",
    "eventTime": "2026-01-01T00:00:00+00:00",
    "producer": "urn:winnow:0.1.0",
    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    "run": {"runId": "01a24940-2cf9-718e-8e59-4d89ed3663cd", "facets": {}},
    "job": {"namespace": "winnow", "name": "demo"},
    "inputs": [{"namespace": "file", "name": "/a"}],
    "outputs": [],
}


@pytest.mark.parametrize(
    "change",
    [
        {"eventType": "DONE"},
        {"eventTime": "yesterday"},
        {"producer": "not a uri"},
        {"run": {"runId": "not-a-uuid"}},
        {"job": {"namespace": "winnow"}},
        {"inputs": [{"namespace": "file"}]},
        {"run": {"runId": GOOD["run"]["runId"], "facets": {"x": {"_producer": "urn:a"}}}},
        {
            "run": {
                "runId": GOOD["run"]["runId"],
                "facets": {
                    "errorMessage": {"_producer": "urn:a", "_schemaURL": "urn:b", "message": "m"}
                },
            }
        },
    ],
)
def test_the_schema_rejects_what_the_spec_rejects(change: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        RUN_EVENT, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert validator.is_valid(GOOD)
    assert not validator.is_valid({**GOOD, **change})


def _plain(facet: Any) -> Any:
    from openlineage.client.serde import Serde

    return json.loads(Serde.to_json(facet))
