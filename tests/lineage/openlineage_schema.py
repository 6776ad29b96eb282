"""The OpenLineage 2-0-2 RunEvent rules, as a JSON Schema, for checking emitted events.

openlineage-python (1.54) ships no JSON schema files (its event classes are
generated from them), so this is written here from the spec
(https://openlineage.io/spec/2-0-2/OpenLineage.json and the facets' schemas
under https://openlineage.io/spec/facets/): the envelope (required fields,
event types, URIs, facet base fields) and the standard facets Winnow emits.
"""

from __future__ import annotations

from typing import Any

# jsonschema checks "format: uri" only with rfc3987 installed: the pattern asks for a scheme.
URI = {"type": "string", "format": "uri", "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:[^ ]+$"}

BASE_FACET = {
    "type": "object",
    "properties": {"_producer": URI, "_schemaURL": URI, "_deleted": {"type": "boolean"}},
    "required": ["_producer", "_schemaURL"],
}


def _facet(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": "#/$defs/BaseFacet"},
            {"type": "object", "properties": properties, "required": required},
        ]
    }


SCHEMA_FIELD = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "description": {"type": "string"},
        "fields": {"type": "array", "items": {"$ref": "#/$defs/SchemaField"}},
    },
    "required": ["name"],
}

STATISTICS = {
    "rowCount": {"type": "integer", "minimum": 0},
    "size": {"type": "integer", "minimum": 0},
    "fileCount": {"type": "integer", "minimum": 0},
}

# Standard facets by the key OpenLineage gives them; any other key is a custom facet
# (a BaseFacet with its own fields).
STANDARD_FACETS = {
    "schema": _facet(
        {"fields": {"type": "array", "items": {"$ref": "#/$defs/SchemaField"}}}, ["fields"]
    ),
    "version": _facet({"datasetVersion": {"type": "string"}}, ["datasetVersion"]),
    "storage": _facet(
        {"storageLayer": {"type": "string"}, "fileFormat": {"type": "string"}},
        ["storageLayer"],
    ),
    "inputStatistics": _facet(STATISTICS, []),
    "outputStatistics": _facet(STATISTICS, []),
    "jobType": _facet(
        {
            "processingType": {"enum": ["BATCH", "STREAMING", "SERVICE"]},
            "integration": {"type": "string"},
            "jobType": {"type": "string"},
        },
        ["processingType", "integration"],
    ),
    "processing_engine": _facet(
        {
            "version": {"type": "string"},
            "name": {"type": "string"},
            "openlineageAdapterVersion": {"type": "string"},
        },
        ["version"],
    ),
    "errorMessage": _facet(
        {
            "message": {"type": "string"},
            "programmingLanguage": {"type": "string"},
            "stackTrace": {"type": "string"},
        },
        ["message", "programmingLanguage"],
    ),
}


def _facets() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: v for k, v in STANDARD_FACETS.items()},
        "additionalProperties": {"$ref": "#/$defs/BaseFacet"},
    }


DATASET = {
    "type": "object",
    "properties": {
        "namespace": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "facets": _facets(),
        "inputFacets": _facets(),
        "outputFacets": _facets(),
    },
    "required": ["namespace", "name"],
}

RUN_EVENT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"BaseFacet": BASE_FACET, "SchemaField": SCHEMA_FIELD, "Dataset": DATASET},
    "type": "object",
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": URI,
        "schemaURL": URI,
        "run": {
            "type": "object",
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": _facets()},
            "required": ["runId"],
        },
        "job": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string", "minLength": 1},
                "name": {"type": "string", "minLength": 1},
                "facets": _facets(),
            },
            "required": ["namespace", "name"],
        },
        "inputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}},
        "outputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}},
    },
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
}
