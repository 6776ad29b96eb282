"""OpenLineage run events of a Winnow job or export, built with the OpenLineage client.

Imported only when lineage is on (``winnow.lineage`` decides): this module
imports ``openlineage`` at its top. Events follow OpenLineage 2-0-2: a job
(``namespace``, the pipeline's name), a run (a new UUIDv7 per Winnow job; the
job id is in the ``winnow_run`` facet), input datasets (the input files, named
by OpenLineage's dataset naming: ``file`` + absolute path, ``s3://bucket`` +
key, ``gs://bucket`` + key, other URLs ``scheme://host`` + path; a chunk of
data in memory by the artifact it was committed as, which its SHA-256 names)
and the output dataset (the run's manifests, ``<output>/manifests/<pipeline>``, which
list the artifacts that ``winnow export`` reads).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attr
import pyarrow as pa
from openlineage.client.constants import __version__ as client_version
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    JobFacet,
    OutputDatasetFacet,
    RunFacet,
    dataset_version_dataset,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
    storage_dataset,
)
from openlineage.client.utils import RedactMixin
from openlineage.client.uuid import generate_static_uuid

from winnow.records import JobStatus
from winnow.sources.discover import MEMORY_PREFIX, SourceFile
from winnow.storage.artifacts import ArtifactStore
from winnow.storage.manifests import manifests_folder, output_refs

WINNOW_VERSION = version("winnow")
PRODUCER = f"urn:winnow:{WINNOW_VERSION}"
SCHEMA_BASE = f"urn:winnow:lineage:{WINNOW_VERSION}"

# How a job's status ends its OpenLineage run.
END_STATES = {
    JobStatus.SUCCEEDED: RunState.COMPLETE,
    JobStatus.FAILED: RunState.FAIL,
    JobStatus.CANCELLED: RunState.ABORT,
}


def end_state(status: Any, exc: BaseException | None) -> str:
    """The end of a job's run: ABORT on an interrupt, FAIL on an error, else by its status."""
    if isinstance(exc, KeyboardInterrupt):
        return RunState.ABORT.value
    if exc is not None:
        return RunState.FAIL.value
    return END_STATES.get(status, RunState.FAIL).value


@attr.define
class WinnowStage(RedactMixin):
    """One stage in the ``winnow_stages`` run facet."""

    name: str
    version: str
    fingerprint: str
    codeDigest: str | None
    batches: dict[str, int] | None = None  # at the end: run, skipped, retried, failed
    planned: dict[str, int] | None = None  # at the start: what the plan will run, retry, skip
    rowsIn: int | None = None
    rowsOut: int | None = None
    filtered: int | None = None
    quarantined: int | None = None
    bytesOut: int | None = None
    _skip_redact: ClassVar[list[str]] = ["name", "version", "fingerprint", "codeDigest"]


@attr.define
class WinnowStagesRunFacet(RunFacet):
    """Per stage: its code fingerprint and version, batches run/skipped, rows in and out."""

    stages: list[WinnowStage]

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}:WinnowStagesRunFacet"


@attr.define
class WinnowRunFacet(RunFacet):
    """The Winnow job behind a run: its id, status, where it read and wrote, its rows."""

    jobId: str
    pipeline: str
    profile: str
    status: str
    stateUrl: str | None = None
    outputUrl: str | None = None
    manifest: str | None = None
    rows: dict[str, Any] | None = None
    _additional_skip_redact: ClassVar[list[str]] = ["jobId", "pipeline", "profile", "status"]

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}:WinnowRunFacet"


def run_id(record: dict[str, Any]) -> str:
    """The OpenLineage run id of a Winnow job: a UUIDv7 from its start time and job id.

    The same job record always gives the same id, so an export names its job's
    run as its parent, and anyone holding the record can find the run.
    """
    started = datetime.fromisoformat(record["created_at"])
    return str(generate_static_uuid(started, record["job_id"].encode()))


def dataset_name(url: str) -> tuple[str, str]:
    """The OpenLineage (namespace, name) of a file or folder URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file", "local") or len(scheme) == 1:  # a path, or a Windows drive
        if scheme in ("file", "local") and parts.netloc not in ("", "localhost"):
            return f"file://{parts.netloc}", parts.path
        path = parts.path if scheme in ("file", "local") else url
        return "file", os.path.abspath(path)
    scheme = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}.get(scheme, scheme)
    return f"{scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"


@attr.define
class Output:
    """A finished job's output as its manifest lists it: artifacts, bytes, Arrow schema."""

    files: int = 0
    size: int = 0
    schema: Any = None


def read_output(record: dict[str, Any], storage_options: dict[str, Any]) -> Output:
    """What a finished job's manifest lists (the schema from its first artifact)."""
    if not record.get("manifest"):
        return Output()
    refs = output_refs(record, storage_options)
    out = Output(len(refs), sum(r.bytes for r in refs))
    if not refs:
        return out
    store = ArtifactStore.for_uri(refs[0].uri, storage_options)
    if refs[0].format == "parquet":
        import pyarrow.parquet as pq

        with store.open(refs[0]) as f:
            out.schema = pq.read_schema(f)
    else:
        out.schema = store.read(refs[0]).schema
    return out


def schema_facet(schema: Any) -> schema_dataset.SchemaDatasetFacet:
    """The OpenLineage schema facet of a pyarrow schema (struct fields nested)."""
    return schema_dataset.SchemaDatasetFacet(fields=_fields(schema))


def _fields(fields: Any) -> list[schema_dataset.SchemaDatasetFacetFields]:
    out = []
    for field in fields:
        nested = _fields(field.type) if pa.types.is_struct(field.type) else []
        out.append(
            schema_dataset.SchemaDatasetFacetFields(
                name=field.name, type=str(field.type), fields=nested
            )
        )
    return out


def input_datasets(
    files: Sequence[SourceFile], schema: Any, rows: dict[str, Any] | None
) -> list[InputDataset]:
    """The input files, each with its version (identity) and, once read, its rows.

    A chunk of data in memory is named by its artifact (``.../sha256/ab/<digest>.arrow``),
    not by its place (``inmemory://chunk-000003``): the same place in two inputs, or
    two pipelines, is not the same data.
    """
    out = []
    for file in files:
        in_memory = file.url.startswith(MEMORY_PREFIX)
        namespace, name = dataset_name(file.read_url if in_memory else file.url)
        facets: dict[str, DatasetFacet] = {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=file.identity
            ),
        }
        if schema is not None:
            facets["schema"] = schema_facet(schema)
        input_facets: dict[str, InputDatasetFacet] = {}
        read = (rows or {}).get(file.url)
        if read is not None:
            input_facets["inputStatistics"] = (
                input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=read["read"], size=file.size, fileCount=1
                )
            )
        out.append(InputDataset(namespace, name, facets=facets, inputFacets=input_facets))
    return out


def output_dataset(record: dict[str, Any], output: Output | None, fmt: str) -> OutputDataset:
    """The run's output: its manifests, ``<output>/manifests/<pipeline>``.

    ``output`` (once the job has ended) adds its schema, version (the job id)
    and statistics.
    """
    url = f"{manifests_folder(record['output_url'])}/{record['pipeline']}"
    namespace, name = dataset_name(url)
    facets: dict[str, DatasetFacet] = {
        "storage": storage_dataset.StorageDatasetFacet(storageLayer="winnow", fileFormat=fmt)
    }
    output_facets: dict[str, OutputDatasetFacet] = {}
    if output is not None and record.get("manifest"):
        if output.schema is not None:
            facets["schema"] = schema_facet(output.schema)
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=record["job_id"]
        )
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=record.get("rows_out"), size=output.size, fileCount=output.files
            )
        )
    return OutputDataset(namespace, name, facets=facets, outputFacets=output_facets)


def stages_facet(record: dict[str, Any], ended: bool) -> WinnowStagesRunFacet:
    """Per stage: planned batches at the start; batches, rows and bytes at the end."""
    plan_rows = {row["name"]: row for row in record.get("plan") or []}
    counts = record.get("counts") or {}
    stages = []
    for parts in record.get("stages") or []:
        name = parts["name"]
        c = counts.get(name) if ended else None
        if c is None:
            row = plan_rows.get(name, {})
            planned = {k: int(row.get(k, 0)) for k in ("run", "retry", "skip")}
            stages.append(
                WinnowStage(
                    name, parts["version"], parts["fingerprint"], parts.get("code"), planned=planned
                )
            )
            continue
        batches = {k: int(c[k]) for k in ("run", "skipped", "retried", "failed")}
        stages.append(
            WinnowStage(
                name,
                parts["version"],
                parts["fingerprint"],
                parts.get("code"),
                batches,
                rowsIn=c["rows_in"],
                rowsOut=c["rows_out"],
                filtered=c["rows_in"] - c["rows_out"],
                quarantined=c["bad_records"],
                bytesOut=c["bytes_out"],
            )
        )
    return WinnowStagesRunFacet(stages=stages, producer=PRODUCER)


def run_event(
    state_name: str,
    run_id: str,
    namespace: str,
    record: dict[str, Any],
    inputs: list[InputDataset],
    outputs: list[OutputDataset],
    error: BaseException | None = None,
    event_time: str | None = None,
) -> RunEvent:
    """A run event (``START``, ``COMPLETE``, ``FAIL``, ``ABORT``) of a job, from its record."""
    state = RunState(state_name)
    ended = state != RunState.START
    accounting = record.get("accounting") or {}
    facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=WINNOW_VERSION, name="Winnow", openlineageAdapterVersion=client_version
        ),
        "winnow_run": WinnowRunFacet(
            producer=PRODUCER,
            jobId=record["job_id"],
            pipeline=record["pipeline"],
            profile=str((record.get("profile") or {}).get("name", "")),
            status=str(record.get("status", "")),
            stateUrl=record.get("state_url"),
            outputUrl=record.get("output_url"),
            manifest=record.get("manifest") if ended else None,
            rows=accounting.get("total") if ended else None,
        ),
        "winnow_stages": stages_facet(record, ended),
    }
    message = failure_message(record, error) if state in (RunState.FAIL, RunState.ABORT) else None
    if message is not None:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message[0], programmingLanguage="python", stackTrace=message[1]
        )
    return RunEvent(
        eventType=state,
        eventTime=event_time or datetime.now(UTC).isoformat(),
        run=Run(runId=run_id, facets=facets),
        job=Job(namespace=namespace, name=record["pipeline"], facets=job_facets()),
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )


def job_facets(job_type: str = "PIPELINE") -> dict[str, JobFacet]:
    """A Winnow job is a batch job of the integration ``WINNOW``."""
    return {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="WINNOW", jobType=job_type
        )
    }


def failure_message(
    record: dict[str, Any], error: BaseException | None
) -> tuple[str, str | None] | None:
    """Why a job failed (message and stack trace): its exception, else its record's errors."""
    if error is not None:
        import traceback

        text = "".join(traceback.format_exception(error))
        return f"{type(error).__name__}: {error}", text
    err = record.get("error")
    if err:
        return f"{err['type']}: {err['message']}", err.get("traceback")
    groups = record.get("errors") or {}
    if not groups:
        return None
    poison = len(record.get("poison_batches") or [])
    lines = [
        f"{kind} x{g.get('count', 0)} at {', '.join(sorted(set(g.get('stages') or [])))}: "
        f"{(g.get('example') or {}).get('message', '')}"
        for kind, g in groups.items()
    ]
    return f"{poison} poison batch(es); " + "; ".join(lines), None
