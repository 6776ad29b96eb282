"""The OpenLineage run of a ``winnow export``: the job's output in, the exported table out.

Imported only when lineage is on. An export is a run of the job
``<pipeline>.export`` (job type ``EXPORT``) whose parent is the exported
job's run; its input is that run's output dataset (its manifests), its output
the export's target, named like any file or folder URL (a Delta, Iceberg or
Lance table: where the table is, its storage layer the format).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    storage_dataset,
)
from openlineage.client.uuid import generate_static_uuid

from winnow.lineage import events

_FILES = {"delta": "parquet", "iceberg": "parquet", "lance": "lance"}  # a table's data files


def export_events(
    namespace: str,
    record: dict[str, Any],
    result: dict[str, Any],
    started_at: str,
    ended_at: str,
    storage_options: dict[str, Any],
) -> list[RunEvent]:
    """START and COMPLETE of an export (``result`` is what ``tools.export.export`` returned)."""
    run_id = str(
        generate_static_uuid(
            datetime.fromisoformat(started_at), f"{record['job_id']}|{result['to']}".encode()
        )
    )
    source = events.output_dataset(record, None, record["profile"]["artifact_format"])
    source_facets: dict[str, DatasetFacet] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=record["job_id"]
        )
    }
    inputs = [InputDataset(source.namespace, source.name, facets=source_facets)]
    # A table export names the table where it is (an Iceberg table: its location)
    namespace_to, name_to = events.dataset_name(result.get("location") or result["to"])
    output = events.read_output(record, storage_options)
    fmt = result["format"]
    layer, file_format = ("file", fmt) if fmt in ("parquet", "jsonl") else (fmt, _FILES[fmt])
    facets: dict[str, DatasetFacet] = {
        "storage": storage_dataset.StorageDatasetFacet(storageLayer=layer, fileFormat=file_format)
    }
    if output.schema is not None:
        facets["schema"] = events.schema_facet(output.schema)
    statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=result["rows"],
        size=sum(p.get("bytes", 0) for p in result.get("parts") or []),
        fileCount=len(result.get("files") or []),
    )
    outputs = [
        OutputDataset(
            namespace_to,
            name_to,
            facets=facets,
            outputFacets={"outputStatistics": statistics},
        )
    ]
    run_facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=events.WINNOW_VERSION, name="Winnow"
        ),
        "parent": parent_run.ParentRunFacet(
            run=parent_run.Run(runId=events.run_id(record)),
            job=parent_run.Job(namespace=namespace, name=record["pipeline"]),
        ),
    }
    job = Job(
        namespace=namespace,
        name=f"{record['pipeline']}.export",
        facets=events.job_facets("EXPORT"),
    )
    return [
        RunEvent(
            eventType=state,
            eventTime=when,
            run=Run(runId=run_id, facets=run_facets),
            job=job,
            inputs=inputs,
            outputs=outputs,
            producer=events.PRODUCER,
        )
        for state, when in ((RunState.START, started_at), (RunState.COMPLETE, ended_at))
    ]
