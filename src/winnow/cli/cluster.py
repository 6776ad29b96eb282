"""``winnow submit``: run a pipeline on a Ray cluster through the Ray Jobs API."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.markup import escape

from winnow import api
from winnow.cli import console
from winnow.cli.options import request_options
from winnow.errors import Interrupted
from winnow.profile import find_profile_file
from winnow.records import JOB_ACTIVE, JobStatus
from winnow.request import RunRequest

_out, _err = console.out, console.err


@click.command()
@request_options()
@click.option(
    "--address",
    default=None,
    help="The cluster's Jobs API, http://HEAD:8265 (default $RAY_ADDRESS).",
)
@click.option("--wait", is_flag=True, help="Follow the job's logs; exit with its outcome.")
@click.option(
    "--token-file",
    default=None,
    help="File holding the cluster's auth token (default: $RAY_AUTH_TOKEN, "
    "$RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).",
)
@click.option("--pip", multiple=True, help="Extra pip package for the job's env; repeatable.")
@click.option("--queue", is_flag=True, help="Hand the job to the gateway's queue instead.")
def submit(
    request: RunRequest,
    as_json: bool,
    address: str | None,
    wait: bool,
    token_file: str | None,
    pip: tuple[str, ...],
    queue: bool,
) -> None:
    """Submit PIPELINE to a Ray cluster (validated here first; bad input exits 2)."""
    from winnow.execution import submit as jobs_api

    target = jobs_api.jobs_address(address)
    if queue:
        from winnow.gateway import queue as job_queue

        record = job_queue.enqueue(request, submit_to=target)
        _report({"job_id": record["job_id"], "status": record["status"]}, as_json)
        return
    token = jobs_api.auth_token(token_file)
    session = api.resolve_session(request)
    for note in session.notes:
        console.note(note)
    profile = request.profile
    profile_file = str(find_profile_file(profile)) if isinstance(profile, str) else None
    job_id = api.new_job_id(session.pipeline.name)
    record = jobs_api.submit(session, target, token, job_id, list(pip), profile_file)
    for note in record.pop("notes", []):
        console.note(note)
    ray_info = record["ray"]
    info = {
        "job_id": job_id,
        "ray_submission_id": ray_info["submission_id"],
        "dashboard_url": ray_info["dashboard_url"],
        "status": record["status"],
    }
    if not wait:
        _report(info, as_json)
        return
    if not as_json:
        _report(info, False)
    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    ray_final = jobs_api.follow(target, token, ray_info["submission_id"], echo)
    final = session.state.read_job(job_id)
    if final.get("status") in (*JOB_ACTIVE, JobStatus.PENDING):
        jobs_api.mark_lost(session.state, final, {"status": ray_final, "message": ""})
    info.update(status=final["status"], ray_status=ray_final)
    for key in ("rows_in", "rows_out", "wall_s", "manifest", "error"):
        if key in final:
            info[key] = final[key]
    _report(info, as_json)
    if final["status"] == JobStatus.CANCELLED:
        raise Interrupted("the job was cancelled; committed batches stay committed")
    if final["status"] != JobStatus.SUCCEEDED:
        sys.exit(1)


def _report(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
        return
    lines = [f"job        {info['job_id']}: {info['status']}"]
    if "ray_submission_id" in info:
        lines.append(f"ray job    {info['ray_submission_id']}")
        lines.append(f"dashboard  {info['dashboard_url']}/#/jobs/{info['ray_submission_id']}")
    for key in ("ray_status", "rows_in", "rows_out", "wall_s", "manifest"):
        if key in info:
            lines.append(f"{key.replace('_', ' '):<10} {info[key]}")
    if "error" in info:
        lines.append(f"error      {info['error'].get('type')}: {info['error'].get('message')}")
    for line in lines:
        _out.print(escape(line), highlight=False)
