"""Queued jobs the gateway hands to a Ray cluster, and reconciling them with Ray.

``winnow submit --queue`` (or ``enqueue`` with a ``submit_to`` request) leaves a
PENDING job whose request names a Jobs API address. The gateway submits it
under the same job id; the job's driver on the cluster then owns the record.
While the record says SUBMITTED or RUNNING the gateway asks Ray how the job is
doing; a job Ray has ended whose record was never finished (its driver was
lost with its node) is marked FAILED with the reason, never left hanging.
"""

from __future__ import annotations

import logging
from typing import Any

from winnow import api
from winnow.profile import find_profile_file
from winnow.records import JOB_ACTIVE
from winnow.request import RunRequest
from winnow.storage.state import State

log = logging.getLogger("winnow.gateway")


def submit_queued(state_url: str | None, job: dict[str, Any]) -> dict[str, Any]:
    """Submit a claimed queued job to its cluster; return the SUBMITTED record."""
    from winnow.execution import submit as jobs_api

    stored = job["request"]
    request = RunRequest.from_dict(stored).but(state=state_url)
    session = api.resolve_session(request)
    profile = request.profile
    record = jobs_api.submit(
        session,
        stored["submit_to"],
        jobs_api.auth_token(None),
        job["job_id"],
        [],
        str(find_profile_file(profile)) if isinstance(profile, str) else None,
        keep={k: job[k] for k in api.QUEUE_FIELDS if k in job},
    )
    for note in record.pop("notes", []):
        log.warning(note)
    return record


def reconcile(state: State, jobs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Finish the records of submitted jobs Ray has ended; return (job, Ray status) pairs."""
    from winnow.execution import submit as jobs_api

    ended = []
    for job in jobs:
        if not job.get("ray") or job.get("status") not in JOB_ACTIVE:
            continue
        seen = jobs_api.ray_status(job) or {}
        if not jobs_api.ray_ended(seen.get("status")):
            continue
        fresh = state.read_job(job["job_id"])  # the driver may have just finished it
        if fresh.get("status") in JOB_ACTIVE:
            jobs_api.mark_lost(state, fresh, seen)
            ended.append((job["job_id"], str(seen["status"])))
    return ended
