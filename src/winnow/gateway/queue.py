"""The job queue: PENDING job records in the state, claimed by the gateway.

A queued job is an ordinary ``jobs/<job_id>.json`` record with status
PENDING and a ``request`` (what ``winnow run`` would have been given). The
gateway claims the oldest PENDING job, runs it under the same job id, and
the run's record replaces the queued one (keeping ``request``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from winnow import api, jobs, sources
from winnow.records import JOB_ACTIVE, ErrorRecord, JobStatus
from winnow.request import RunRequest
from winnow.storage.liveness import Liveness, liveness
from winnow.storage.state import State, event, now_iso

MAX_ATTEMPTS = 3  # a job requeued this many times (its runner kept dying) is failed


def enqueue(request: RunRequest, submit_to: str | None = None) -> dict[str, Any]:
    """Validate a run request (bad input fails here, exit 2) and queue it as PENDING.

    With ``submit_to`` (a Jobs API address) the gateway submits the job to
    that Ray cluster instead of running it itself, and follows it there. The
    request's state is where the job is queued; the gateway runs it against
    its own state.
    """
    request.to_dict()  # refuses what cannot be stored (data in memory) before anything is written
    session = api.resolve_session(request)
    sources.discover(session.inputs, session.profile.storage_options)  # missing input: exit 2
    st = session.state
    st.prepare()
    job_id = jobs.new_job_id(session.pipeline.name)
    queued = request.but(
        pipeline=session.pipeline_file or request.pipeline,
        inputs=tuple(session.inputs),
        output=session.output_url,
        state=None,
    )
    stored = queued.to_dict()
    if submit_to:
        stored["submit_to"] = submit_to
    record = {
        "job_id": job_id,
        "pipeline": session.pipeline.name,
        "status": JobStatus.PENDING,
        "created_at": now_iso(),
        "queued_at": now_iso(),
        "attempts": 0,
        "request": stored,
        "enqueued_by": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    st.write_job(record)
    st.append_events([event("job_queued", job_id, pipeline=session.pipeline.name)])
    return record


def depth(jobs: list[dict[str, Any]]) -> dict[str, int]:
    """Queue depth as the runbook words it: pending, running, done, failed."""
    counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
    for job in jobs:
        status = job.get("status")
        if status == JobStatus.PENDING:
            counts["pending"] += 1
        elif status in JOB_ACTIVE:  # SUBMITTED: running on a Ray cluster
            counts["running"] += 1
        elif status == JobStatus.SUCCEEDED:
            counts["done"] += 1
        elif status in (JobStatus.FAILED, JobStatus.CANCELLED):
            counts["failed"] += 1
    return counts


def next_pending(state: State) -> dict[str, Any] | None:
    """The oldest PENDING job, or None."""
    # A PENDING record without a request (restored from a foreground run) cannot be run here.
    pending = [
        j for j in state.list_jobs() if j.get("status") == JobStatus.PENDING and "request" in j
    ]
    pending.sort(key=lambda j: (j.get("queued_at") or j.get("created_at") or "", j["job_id"]))
    return pending[0] if pending else None


def requeue(state: State, record: dict[str, Any], reason: str) -> dict[str, Any]:
    """Put a job whose runner is gone back in the queue (or fail it after MAX_ATTEMPTS)."""
    attempts = int(record.get("attempts") or 0)
    if attempts >= MAX_ATTEMPTS:
        record.update(
            status=JobStatus.FAILED,
            finished_at=now_iso(),
            error=ErrorRecord(
                "Abandoned", f"{reason}; gave up after {attempts} attempts"
            ).to_dict(),
        )
        state.write_job(record)
        state.append_events([event("job_abandoned", record["job_id"], reason=reason)])
        return record
    record.update(status=JobStatus.PENDING, requeued={"at": now_iso(), "reason": reason})
    state.write_job(record)
    state.append_events([event("job_requeued", record["job_id"], reason=reason)])
    return record


def runner_gone(record: dict[str, Any], now_s: float, lease_s: float) -> str | None:
    """Why a RUNNING job's runner is gone (process dead on this host, or lease expired)."""
    from datetime import datetime

    pid = record.get("pid")
    alive = liveness(pid, record.get("host"))
    if alive is Liveness.GONE:
        return f"its process {pid} is gone"
    if alive is Liveness.ALIVE:
        return None
    beat = record.get("heartbeat_at") or record.get("created_at")
    if beat:
        age = now_s - datetime.fromisoformat(beat).timestamp()
        if age > lease_s:
            return f"no heartbeat for {age:.0f}s (lease {lease_s:.0f}s)"
    return None
