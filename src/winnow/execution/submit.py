"""Submitting a pipeline to a Ray cluster through the Ray Jobs API.

The job's driver runs ``python -m winnow run ... --address auto --job-id ID``
on the cluster's head node. Its runtime env carries the project's
``pipelines/`` and ``profiles/`` with the named pipeline and profile file (the
working dir; a packaged profile is copied in too) and this Winnow package (a
py_module), so the cluster runs exactly the code the user submitted. The job
is recorded in the state as SUBMITTED before the driver starts; the driver's
run then owns the record.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import winnow
from winnow.errors import UsageError
from winnow.records import ErrorRecord, JobStatus
from winnow.storage.fs import resolve
from winnow.storage.state import State, event, now_iso


def ray_ended(status: object) -> bool:
    """Whether ``status``, a status name of Ray's Jobs API, is one Ray never leaves.

    Ray's job statuses are Ray's vocabulary (its ``JobStatus``), not ours:
    ``STOPPED`` has no counterpart in :class:`winnow.records.JobStatus`.
    """
    from ray.job_submission import JobStatus as RayJobStatus

    try:
        return RayJobStatus(status).is_terminal()
    except ValueError:  # UNKNOWN (the Jobs API could not be asked), or no status
        return False


def jobs_address(address: str | None) -> str:
    """The dashboard (Jobs API) address: --address, else RAY_ADDRESS."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UsageError(
            "no Ray cluster to submit to: pass --address http://HEAD:8265 or set RAY_ADDRESS"
        )
    if address.startswith("ray://") or "://" not in address:
        raise UsageError(
            f"--address {address!r} is not a Jobs API address; submit needs the dashboard's "
            "http://HEAD:8265 (`winnow run --address` is the one that takes ray:// or HOST:PORT)"
        )
    return address.rstrip("/")


def auth_token(token_file: str | None) -> str | None:
    """The cluster's token, from --token-file or Ray's own places (never printed)."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: cannot read it ({exc})") from None
        if not token:
            raise UsageError(f"--token-file {token_file} is empty")
        return token
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    candidates = [os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")]
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_file():
            token = Path(candidate).expanduser().read_text().strip()
            if token:
                return token
    return None


def client(address: str, token: str | None) -> Any:
    """A Ray Jobs API client for the cluster at ``address``.

    Raises:
        UsageError: the API cannot be reached (the error text has the token
            redacted and hints at a missing token on 401/403).
    """
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # Ray raises ConnectionError/RuntimeError/ValueError variously
        message = _redact(str(exc), token).strip().splitlines()[0][:300] if str(exc) else ""
        hint = (
            " The cluster wants a token: pass --token-file or set RAY_AUTH_TOKEN_PATH."
            if "401" in message or "403" in message or "uthenticat" in message
            else ""
        )
        raise UsageError(
            f"cannot reach the Ray Jobs API at {address} ({type(exc).__name__}: {message}).{hint} "
            "Check the address (the dashboard's http://HEAD:8265) and that the cluster is up."
        ) from None


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


@contextmanager
def bundle(pipeline_file: str, profile_file: str | None) -> Iterator[tuple[Path, str, str | None]]:
    """A working dir with the project's pipelines/ and profiles/, and the named files.

    The named pipeline and profile are the files resolved here (a project's
    own, a packaged profile, or any path): each is copied over a project file
    of the same name, so the cluster runs exactly what ran the local checks.

    Yields:
        The working dir, and the pipeline's and profile's paths inside it.
    """
    project = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="winnow-submit-") as tmp:
        root = Path(tmp)
        for sub, pattern in (("pipelines", "*.py"), ("profiles", "*.toml")):
            (root / sub).mkdir()
            for path in sorted((project / sub).glob(pattern)) if (project / sub).is_dir() else []:
                shutil.copy2(path, root / sub / path.name)
        pipe = Path(pipeline_file)
        shutil.copy2(pipe, root / "pipelines" / pipe.name)
        prof_ref = None
        if profile_file:
            prof = Path(profile_file)
            shutil.copy2(prof, root / "profiles" / prof.name)
            prof_ref = f"profiles/{prof.name}"
        yield root, f"pipelines/{pipe.name}", prof_ref


def absolute(url: str, storage_options: dict[str, Any]) -> tuple[str, bool]:
    """A URL the cluster can open, and whether it is on this machine's disk."""
    fs, path = resolve(url, storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return os.path.abspath(path), True
    return url, False


def cluster_request(session: Any) -> tuple[Any, list[str]]:
    """The session's request with every path made one the cluster can reach, and notes.

    Local paths become absolute (every node must then see this filesystem,
    which the note says); object-store URLs stay as they are.
    """
    opts = session.profile.storage_options
    local: list[str] = []

    def reachable(kind: str, url: str) -> str:
        url, on_disk = absolute(url, opts)
        if on_disk:
            local.append(f"{kind} {url}")
        return url

    state_url = reachable("state", session.state.url)
    output_url = reachable("output", session.output_url)
    inputs = tuple(reachable("input", url) for url in session.inputs)
    notes = []
    if local:
        notes.append(
            "local paths are sent as absolute paths (" + "; ".join(local) + "): every node of "
            "the cluster must see this filesystem. On a real cluster use object storage "
            "(s3://...) for inputs, --output and --state."
        )
    request = session.request.but(inputs=inputs, output=output_url, state=state_url)
    return request, notes


def submit(
    session: Any,
    address: str,
    token: str | None,
    job_id: str,
    pip: list[str],
    profile_file: str | None,
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Submit the resolved session; record it in the state; return the job record.

    ``keep``: fields of a queued record to carry over (request, attempts ...).
    """
    request, notes = cluster_request(session)
    jobs = client(address, token)  # an unreachable address fails here, before any record
    with bundle(session.pipeline_file, profile_file) as (workdir, pipe_ref, prof_ref):
        # The job runs what was asked for here, with the bundle's pipeline and profile.
        remote = request.but(pipeline=pipe_ref, profile=prof_ref)
        argv = ["python", "-m", "winnow", "run", pipe_ref, *remote.run_args()]
        argv += ["--address", "auto", "--job-id", job_id, "--json"]
        entrypoint = shlex.join(argv)
        submission_id = f"winnow-{job_id}"
        record = {
            **(keep or {}),
            "job_id": job_id,
            "pipeline": session.pipeline.name,
            "pipeline_file": session.pipeline_file,
            "profile": session.profile.redacted(),
            "status": JobStatus.SUBMITTED,
            "created_at": now_iso(),
            "submitted_at": now_iso(),
            "inputs": list(remote.inputs),
            "state_url": session.state.display(),
            "output_url": remote.output,
            "ray": {
                "submission_id": submission_id,
                "address": address,
                "dashboard_url": address,
                "entrypoint": entrypoint,
            },
        }
        session.state.prepare()
        session.state.write_job(record)
        _submit_job(jobs, session, record, token, entrypoint, _runtime_env(workdir, pip))
    session.state.append_events(
        [event("job_submitted", job_id, pipeline=session.pipeline.name, ray=submission_id)]
    )
    record["notes"] = notes
    return record


def _runtime_env(workdir: Path, pip: list[str]) -> dict[str, Any]:
    """The job's runtime env: the bundle as working dir, this Winnow as a py_module."""
    runtime_env: dict[str, Any] = {
        "working_dir": str(workdir),
        "py_modules": [str(Path(winnow.__file__).parent)],
        "env_vars": {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "PYTHONUNBUFFERED": "1"},
    }
    if pip:
        runtime_env["pip"] = list(pip)
    return runtime_env


def _submit_job(
    jobs: Any,
    session: Any,
    record: dict[str, Any],
    token: str | None,
    entrypoint: str,
    runtime_env: dict[str, Any],
) -> None:
    """Hand the job to the Jobs API; a refusal marks the record FAILED and exits 2."""
    try:
        jobs.submit_job(
            entrypoint=entrypoint,
            submission_id=record["ray"]["submission_id"],
            runtime_env=runtime_env,
            metadata={
                "winnow_job_id": record["job_id"],
                "pipeline": session.pipeline.name,
                "profile": session.profile.name,
            },
            entrypoint_num_cpus=0,
        )
    except Exception as exc:
        record.update(
            status=JobStatus.FAILED,
            error=ErrorRecord.clipped("SubmitFailed", _redact(str(exc), token)).to_dict(),
        )
        session.state.write_job(record)
        raise UsageError(
            f"the Ray Jobs API at {record['ray']['address']} refused the job: "
            f"{_redact(str(exc), token).strip()[:500]}"
        ) from None


def follow(address: str, token: str | None, submission_id: str, echo: Callable[[str], None]) -> str:
    """Stream the job's logs until it ends; return Ray's final status."""
    jobs = client(address, token)

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(submission_id):
            for line in lines.splitlines():
                echo(line)

    try:
        asyncio.run(tail())
    except Exception as exc:  # the log stream closing early is not the job's outcome
        echo(f"(log stream ended: {type(exc).__name__})")
    return str(_wait_terminal(jobs, submission_id))


def _wait_terminal(jobs: Any, submission_id: str, timeout: float = 60.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = str(jobs.get_job_status(submission_id))
        status = status.rsplit(".", 1)[-1]
        if ray_ended(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def ray_status(record: dict[str, Any], token: str | None = None) -> dict[str, Any] | None:
    """Ray's view of a submitted job, or why it could not be had (never raises)."""
    ray_info = record.get("ray")
    if not ray_info:
        return None
    try:
        jobs = client(ray_info["address"], token if token is not None else auth_token(None))
        info = jobs.get_job_info(ray_info["submission_id"])
    except Exception as exc:
        return {"status": "UNKNOWN", "message": f"Jobs API unreachable: {type(exc).__name__}"}
    status = str(info.status).rsplit(".", 1)[-1]
    return {
        "status": status,
        "ray_job_id": info.job_id,
        "message": (info.message or "")[:300],
        "driver_node": getattr(info, "driver_node_id", None),
    }


def mark_lost(state: State, record: dict[str, Any], ray_state: dict[str, Any]) -> None:
    """A job Ray ended while our record says it never finished: record why."""
    record.update(
        status=JobStatus.FAILED,
        finished_at=now_iso(),
        error=ErrorRecord(
            "RayJobEnded",
            f"Ray reports the job {ray_state['status']}: {ray_state.get('message', '')}",
        ).to_dict(),
    )
    state.write_job(record)
    state.append_events(
        [event("job_finished", record["job_id"], status=JobStatus.FAILED, error="RayJobEnded")]
    )
