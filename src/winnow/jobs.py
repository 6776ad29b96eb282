"""A job's record through its life.

Started, finished or failed, its run manifest, and the jobs whose driver is
gone.

A job record (``state/jobs/<id>.json``) is written when the job starts
(status RUNNING), and again when it ends: counts, rows, the state before and
after, errors grouped by type, poison batches, where every input row went,
and the URL of its run manifest (the final stage's artifacts in source order).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from winnow.errors import StateError
from winnow.execution.outcome import Outcome, StageCounts
from winnow.partitions import groupings, rejoins
from winnow.plan import SKIP, Plan
from winnow.records import BatchStatus, ErrorRecord, JobStatus
from winnow.storage import manifests
from winnow.storage.fs import resolve, to_url
from winnow.storage.liveness import Liveness, liveness
from winnow.storage.state import State, event, now_iso


def started_record(
    the_plan: Plan, state: State, job_id: str, pipeline_file: str | None, output_url: str
) -> dict[str, Any]:
    """A job's record as it starts (RUNNING), keeping what its queued record held."""
    return {
        **queued_fields(state, job_id),
        "job_id": job_id,
        "pipeline": the_plan.pipeline.name,
        "pipeline_file": pipeline_file,
        "profile": the_plan.profile.redacted(),
        "status": JobStatus.RUNNING,
        "created_at": now_iso(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "inputs": [f.url for f in the_plan.files],
        # Data in memory: where each chunk's artifact is (gc keeps them while the job runs).
        "input_chunks": {f.url: f.location for f in the_plan.files if f.location},
        "state_url": state.display(),
        "output_url": to_url(*resolve(output_url, the_plan.profile.storage_options)),
        "stages": [{**s.parts, "fingerprint": s.fingerprint} for s in the_plan.all_stages()],
        "plan": the_plan.to_dict()["stages"],
        "state_before": the_plan.before,
    }


def publish_start(state: State, record: dict[str, Any], the_plan: Plan) -> None:
    """Write the started record and its ``job_started`` event."""
    state.write_job(record)
    started = event(
        "job_started",
        record["job_id"],
        pipeline=the_plan.pipeline.name,
        batches=len(the_plan.batches),
        work=the_plan.work,
    )
    state.append_events([started])


def publish_end(state: State, record: dict[str, Any], the_plan: Plan) -> None:
    """Record what follows a finished job record: its inputs and its event.

    Remembers the inputs this run read (the next plan names a changed file as
    the cause) and appends the ``job_finished`` event.
    """
    state.write_inputs(
        the_plan.pipeline.name,
        {
            "files": {f.url: f.identity for f in the_plan.files},
            "batch_rows": the_plan.profile.batch_rows,
            "reader": the_plan.reader,
        },
    )
    finished = event(
        "job_finished",
        record["job_id"],
        status=record["status"],
        wall_s=record["wall_s"],
        rows_out=record["rows_out"],
    )
    state.append_events([finished])


def new_job_id(pipeline: str) -> str:
    """A new job id: the pipeline, the UTC time and 6 random hex digits."""
    return f"{pipeline}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def reconcile_lost_jobs(
    state: State, locked_pipeline: str | None = None, exclude: str | None = None
) -> list[str]:
    """Mark RUNNING jobs whose driver is gone as FAILED (error ``DriverLost``); return their ids.

    A job counts as lost when its driver ran on this host and its process is
    gone, or, for ``locked_pipeline`` (whose lock the caller holds, so no run
    of it is alive anywhere), whatever host it ran on. Jobs submitted to a
    cluster are Ray's to report (``winnow status`` asks it), and queued jobs
    the gateway's (it requeues them).
    """
    lost = []
    for job in state.list_jobs(JobStatus.RUNNING):
        if job["job_id"] == exclude:
            continue
        if job.get("ray") or job.get("request"):
            continue  # Ray reports a cluster's jobs; the gateway requeues its own
        if (
            job.get("pipeline") != locked_pipeline
            and liveness(job.get("pid"), job.get("host")) is not Liveness.GONE
        ):
            continue
        job.update(
            status=JobStatus.FAILED,
            finished_at=job.get("finished_at") or now_iso(),
            error=ErrorRecord(
                "DriverLost",
                f"its driver (pid {job.get('pid')} on {job.get('host')}) is gone: "
                "killed or crashed mid-run; committed batches stay committed, rerun the same "
                "command to finish",
            ).to_dict(),
        )
        try:
            state.write_job(job)
        except OSError:
            continue  # a read-only state: the caller still shows it as lost
        state.append_events([event("job_lost", job["job_id"], pid=job.get("pid"))])
        lost.append(job["job_id"])
    return lost


QUEUE_FIELDS = ("request", "queued_at", "attempts", "requeued", "ray", "submitted_at")


def queued_fields(state: State, job_id: str) -> dict[str, Any]:
    """What a queued (PENDING) record of this job id holds that a run keeps."""
    try:
        prior = state.read_job(job_id)
    except StateError:
        return {}
    return {k: prior[k] for k in QUEUE_FIELDS if k in prior}


def record_failure(state: State, record: dict[str, Any], exc: BaseException, t0: float) -> None:
    """Best effort: the job record says how the job ended, even when storage is what failed."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    kind = getattr(exc, "error_type", "") or type(exc).__name__
    record.update(
        status=JobStatus.CANCELLED if interrupted else JobStatus.FAILED,
        error=ErrorRecord.of(exc, kind=kind, with_traceback=False).to_dict(),
        finished_at=now_iso(),
        wall_s=round(time.monotonic() - t0, 3),
    )
    with contextlib.suppress(Exception):
        state.write_job(record)
        state.append_events(
            [event("job_finished", record["job_id"], status=record["status"], error=kind)]
        )


def finish_record(record: dict[str, Any], the_plan: Plan, outcome: Outcome, wall: float) -> None:
    """Fill in how the job ended.

    Status, counts, rows, the state after and its delta, errors, poison
    batches and where every row went.
    """
    names = [s.name for s in the_plan.all_stages()]
    counts = {
        n: outcome.counts[n].to_dict() if n in outcome.counts else _no_counts() for n in names
    }
    first, last = counts[names[0]], counts[names[-1]]
    total_batches = len(the_plan.batches)
    # The rows the run worked on: those entering the earliest stage it ran (a rerun of
    # a downstream stage alone processed that stage's input, not zero rows).
    processed_rows = next((c["rows_in"] for c in counts.values() if c["run"]), 0)
    after_d, delta = _state_after(the_plan, counts)
    pairs = sum(len(seg.batches) * len(seg.specs) for seg in the_plan.segments())
    status = _status(record, outcome)
    skipped_all = sum(c["skipped"] for c in counts.values())
    record.update(
        status=status,
        finished_at=now_iso(),
        wall_s=round(wall, 3),
        batches=total_batches,
        counts=counts,
        rows_in=first["rows_in"] + first["bad_records"],
        rows_out=last["rows_out"],
        bad_records=sum(c["bad_records"] for c in counts.values()),
        skipped_fraction=round(skipped_all / max(1, pairs), 4),
        throughput_rows_s=round(processed_rows / wall, 1) if wall > 0 else 0.0,
        state_after=after_d,
        delta=delta,
        errors=outcome.errors,
        poison_batches=outcome.poisoned,
        integrity_failures=outcome.integrity,
    )
    if outcome.tally is not None:
        record["accounting"] = outcome.tally.to_dict()
    if the_plan.barrier is not None:
        record["groupings"] = groupings(the_plan)
        if record["groupings"]:
            record["grouping"] = record["groupings"][0]
        if rejoined := rejoins(the_plan):
            record["rejoins"] = rejoined


def _state_after(
    the_plan: Plan, counts: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Per stage, its checkpoints by status after the run, and the change from before."""
    names = list(counts)
    before = dict(the_plan.before)
    for barrier in the_plan.barriers():
        before.update(barrier.before)
    after: dict[str, Counter[str]] = {n: Counter(before.get(n, {})) for n in names}
    for segment in the_plan.segments():
        for bp in segment.batches:
            for i, spec in enumerate(segment.specs):
                if bp.actions[i] != SKIP and bp.prior[i]:
                    after[spec.name][bp.prior[i]["status"]] -= 1  # type: ignore[index]
    for name, c in counts.items():
        after[name][BatchStatus.SUCCEEDED] += c["run"]
        after[name][BatchStatus.FAILED] += c["failed"]
    after_d = {n: {k: v for k, v in c.items() if v} for n, c in after.items()}
    delta = {
        n: {
            k: after_d[n].get(k, 0) - before.get(n, {}).get(k, 0)
            for k in set(after_d[n]) | set(before.get(n, {}))
            if after_d[n].get(k, 0) != before.get(n, {}).get(k, 0)
        }
        for n in names
    }
    return after_d, delta


def _status(record: dict[str, Any], outcome: Outcome) -> JobStatus:
    """How the job ended (a storage failure also gives the record its error)."""
    if outcome.storage_failure:
        record["error"] = ErrorRecord("StorageFailed", outcome.storage_failure).to_dict()
        return JobStatus.FAILED
    if outcome.interrupted:
        return JobStatus.CANCELLED
    if outcome.poisoned or outcome.integrity or any(f is None for f in outcome.finals):
        return JobStatus.FAILED
    return JobStatus.SUCCEEDED


def _no_counts() -> dict[str, Any]:
    """The counts of a stage that never ran in this job (a reduce side not planned)."""
    return StageCounts().to_dict()


def write_manifest(
    the_plan: Plan, job_id: str, output_url: str, finals: list[dict[str, Any] | None]
) -> str:
    """Write the run manifest: the final stage's artifact per batch, in source order; its URL."""
    # With a grouping stage, the output is the last segment's: one entry per partition.
    the_plan = the_plan.segments()[-1]
    if len(finals) != len(the_plan.batches):
        raise ValueError(f"{len(finals)} finals for {len(the_plan.batches)} planned batches")
    entries = (  # made one at a time as the manifest is written
        {
            "batch": bp.source.key,
            "key": bp.keys[-1],
            "source": {
                "file": bp.source.file.url,
                "start": bp.source.start,
                "stop": bp.source.stop,
            },
            "artifact": final["artifact"] if final else None,
            "rows": final.get("rows_out") if final else None,
        }
        for bp, final in zip(the_plan.batches, finals, strict=True)
    )
    body = {
        "job_id": job_id,
        "pipeline": the_plan.pipeline.name,
        "stage": the_plan.stages[-1].name,
        "batches": entries,
    }
    return manifests.write_manifest(output_url, the_plan.profile.storage_options, body)
