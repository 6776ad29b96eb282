"""The public Python API; the CLI is a thin layer over these functions.

>>> import winnow
>>> summary = winnow.run("demo", profile="local-cpu")
>>> summary["status"] == "SUCCEEDED"
True
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from winnow.errors import StateError, StorageFailed, UsageError, WinnowError
from winnow.execution.executor import DEFAULT_EXECUTOR, Executor, check_executor, executor_for
from winnow.pipeline import Pipeline, find_pipeline_file, load_pipeline
from winnow.plan import SKIP, History, Plan, make_plan
from winnow.profile import (
    Profile,
    apply_overrides,
    check_set_stages,
    load_profile,
    unused_stage_tables,
)
from winnow.records import BatchStatus, ErrorRecord, JobStatus
from winnow.request import RunRequest
from winnow.storage.artifacts import ArtifactRef, ArtifactStore
from winnow.storage.fs import join, resolve, to_url, write_atomic
from winnow.storage.liveness import Liveness, liveness
from winnow.storage.state import State, default_state_url, event, now_iso

DEFAULT_OUTPUT = ".winnow/output"
SAMPLES_DIR = ".winnow/samples"


@dataclass
class Session:
    """A resolved invocation: pipeline, profile, inputs, state and output."""

    pipeline: Pipeline
    profile: Profile
    inputs: list[str]
    state: State
    artifacts: ArtifactStore
    output_url: str
    notes: list[str]
    pipeline_file: str | None = None
    request: RunRequest | None = None  # what was asked for (None: built by hand)

    @property
    def rerun(self) -> str | None:
        """The stage that, with those after it, recomputes every batch."""
        return self.request.rerun if self.request else None


def run(
    pipeline: str | Pipeline | RunRequest,
    profile: str | Profile | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
    state: str | None = None,
    sets: list[str] | None = None,
    verify: str | None = None,
    address: str | None = None,
    rerun: str | None = None,
    executor: str = "ray",
) -> dict[str, Any]:
    """Resolve and run a pipeline; return its job record (what `winnow run --json` prints).

    Args:
        pipeline: a pipeline name, file or object, or a whole ``RunRequest``
            (then the other request arguments must be left out).
        address: the Ray cluster to attach to (default: an embedded local Ray).

    The other arguments are ``RunRequest``'s fields.
    """
    if isinstance(pipeline, RunRequest):
        request = pipeline
    else:
        request = RunRequest(
            pipeline,
            profile,
            tuple(inputs or ()),
            output,
            state,
            tuple(sets or ()),
            verify,
            rerun,
            executor,
        )
    return execute(resolve_session(request), address=address)


def open_state(url: str | None = None, storage_options: dict[str, Any] | None = None) -> State:
    """Open a state root (default ``$WINNOW_STATE`` or ``.winnow/state/v1``)."""
    return State(url or default_state_url(), storage_options)


def resolve_session(request: RunRequest) -> Session:
    """Load everything a run needs and validate it; writes nothing."""
    profile, pipeline, sets = request.profile, request.pipeline, list(request.sets)
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if sets:
        prof = apply_overrides(prof, sets)
    pipe = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    check_set_stages(sets, pipe)
    if request.rerun is not None:
        pipe.stage_index(request.rerun)
    notes = []
    unused = unused_stage_tables(prof, pipe)
    if unused:
        notes.append(
            f"profile {prof.name!r} configures stage(s) {', '.join(unused)} that pipeline "
            f"{pipe.name!r} does not have; those tables are ignored"
        )
    prof.apply(pipe)  # validates stage names, params and resources early
    st = State(request.state or default_state_url(), prof.storage_options)
    st.check_version()
    output_url = request.output or DEFAULT_OUTPUT
    artifacts = ArtifactStore(join(output_url.rstrip("/"), "artifacts"), prof.storage_options)
    inputs = list(request.inputs)
    if not inputs:
        inputs = list(pipe.default_inputs)
        if not inputs and pipe.sample_inputs is not None:
            inputs = pipe.sample_inputs(os.path.join(SAMPLES_DIR, pipe.name))
        if not inputs:
            raise UsageError(f"pipeline {pipe.name!r} needs --input (files, folders or globs)")
    pipeline_file = None if isinstance(pipeline, Pipeline) else str(find_pipeline_file(pipeline))
    return Session(pipe, prof, inputs, st, artifacts, output_url, notes, pipeline_file, request)


def plan(session: Session, verify: str | None = None, only_failed: bool = False) -> Plan:
    """Per stage: how many batches will run, be skipped or be retried, and why.

    ``verify`` overrides the request's (``size`` or ``full``).
    """
    if verify is None and session.request is not None:
        verify = session.request.verify
    return make_plan(
        session.pipeline,
        session.profile,
        session.inputs,
        session.state,
        session.artifacts,
        verify=verify,
        history=_history(session),
        only_failed=only_failed,
        rerun=session.rerun,
    )


def _history(session: Session) -> History:
    """What the last run of this pipeline recorded: stage fingerprints and inputs read."""
    history = History()
    for job in session.state.list_jobs():
        if job.get("pipeline") == session.pipeline.name and job.get("stages"):
            history.stages = {s["name"]: s for s in job["stages"]}
            break
    inputs = session.state.read_inputs(session.pipeline.name)
    history.files = dict(inputs.get("files") or {})
    history.batch_rows = inputs.get("batch_rows")
    history.reader = inputs.get("reader")
    return history


def damage_notes(the_plan: Plan, limit: int = 5) -> list[str]:
    """Warnings for checkpoint lines the plan skipped as damaged (their batches rerun)."""
    if not the_plan.damage:
        return []
    lines = [
        f"{len(the_plan.damage)} damaged checkpoint line(s) skipped; their batches are "
        "recomputed. `winnow verify --repair` rewrites the segments (keeping a backup):"
    ]
    lines += [f"  {d}" for d in the_plan.damage[:limit]]
    return lines


def new_job_id(pipeline: str) -> str:
    return f"{pipeline}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def execute(
    session: Session,
    verify: str | None = None,
    address: str | None = None,
    progress: Any = None,
    stop: threading.Event | None = None,
    job_id: str | None = None,
    only_failed: bool = False,
    notify: Callable[[str], None] | None = None,
    reuse_actors: bool = False,
    started: threading.Event | None = None,
    executor: str | None = None,
) -> dict[str, Any]:
    """Run a resolved session to the end under the pipeline lock; return the job record.

    ``started`` is set once the job is recorded and its batches begin to run
    (before that, an interrupt leaves nothing behind). ``executor`` names what
    runs the stages (default: the request's): ``ray`` (actor pools on Ray) or
    ``local`` (this process, no Ray: for pdb, notebooks and tiny inputs).

    Raises:
        LockHeld: another live run of this pipeline holds the state's lock.
        UsageError: no executor has that name.
    """
    t0 = time.monotonic()
    if executor is None:
        executor = session.request.executor if session.request else DEFAULT_EXECUTOR
    check_executor(executor)
    state = session.state
    state.check_version()
    # Bad input fails while planning, before anything is written.
    the_plan = plan(session, verify, only_failed)
    state.prepare()
    job_id = job_id or new_job_id(session.pipeline.name)
    for line in damage_notes(the_plan):
        (notify or _stderr)(line)
    lock, note = state.locks().acquire(session.pipeline.name, job_id)
    try:
        if note:
            (notify or _stderr)(note)
        # Holding the lock proves no other run of this pipeline is alive here.
        for lost in reconcile_lost_jobs(state, session.pipeline.name, exclude=job_id):
            (notify or _stderr)(
                f"job {lost} was left RUNNING by a driver that is gone; marked FAILED"
            )
        return _execute_locked(
            session, the_plan, job_id, address, progress, stop, t0, reuse_actors, started, executor
        )
    finally:
        lock.release()


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
    for job in state.list_jobs():
        if job.get("status") != JobStatus.RUNNING or job["job_id"] == exclude:
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


def _queued_fields(state: State, job_id: str) -> dict[str, Any]:
    """What a queued (PENDING) record of this job id holds that a run keeps."""
    try:
        prior = state.read_job(job_id)
    except StateError:
        return {}
    return {k: prior[k] for k in QUEUE_FIELDS if k in prior}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _execute_locked(
    session: Session,
    the_plan: Plan,
    job_id: str,
    address: str | None,
    progress: Any,
    stop: threading.Event | None,
    t0: float,
    reuse_actors: bool = False,
    started: threading.Event | None = None,
    executor: str = DEFAULT_EXECUTOR,
) -> dict[str, Any]:
    state = session.state
    queued = _queued_fields(state, job_id)
    record: dict[str, Any] = {
        **queued,
        "job_id": job_id,
        "pipeline": session.pipeline.name,
        "pipeline_file": session.pipeline_file,
        "profile": session.profile.redacted(),
        "status": JobStatus.RUNNING,
        "created_at": now_iso(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "inputs": [f.url for f in the_plan.files],
        "state_url": state.display(),
        "output_url": to_url(*resolve(session.output_url, session.profile.storage_options)),
        "stages": [{**s.parts, "fingerprint": s.fingerprint} for s in the_plan.stages],
        "plan": the_plan.to_dict()["stages"],
        "state_before": the_plan.before,
    }
    engine: Executor | None = None
    if the_plan.work:
        # Prepare the executor (Ray: attach and size the pools, once per run) before
        # anything is written: a wrong address or a request the cluster can never
        # host exits 2 clean.
        engine = executor_for(executor, address, reuse_actors)
        engine.prepare(the_plan)
    state.write_job(record)
    state.append_events(
        [
            event(
                "job_started",
                job_id,
                pipeline=session.pipeline.name,
                batches=len(the_plan.batches),
                work=the_plan.work,
            )
        ]
    )
    if started is not None:
        started.set()
    try:
        try:
            outcome = _run_plan(session, the_plan, job_id, engine, progress, stop)
        finally:
            if engine is not None:
                engine.shutdown()
        _finish_record(record, the_plan, outcome, time.monotonic() - t0)
        record["manifest"] = _write_manifest(session, job_id, the_plan, outcome.finals)
        state.write_job(record)
    except BaseException as exc:
        _record_failure(state, record, exc, t0)
        if isinstance(exc, OSError) and not isinstance(exc, WinnowError):
            raise StorageFailed(
                f"job {job_id} stopped: storage failed ({type(exc).__name__}: {exc}). "
                "Committed batches stay committed; fix the storage (free space, permissions) "
                "and rerun the same command"
            ) from None
        raise
    state.write_inputs(
        session.pipeline.name,
        {
            "files": {f.url: f.identity for f in the_plan.files},
            "batch_rows": session.profile.batch_rows,
            "reader": the_plan.reader,
        },
    )
    state.append_events(
        [
            event(
                "job_finished",
                job_id,
                status=record["status"],
                wall_s=record["wall_s"],
                rows_out=record["rows_out"],
            )
        ]
    )
    return record


def _run_plan(
    session: Session,
    the_plan: Plan,
    job_id: str,
    engine: Executor | None,
    progress: Any,
    stop: threading.Event | None,
) -> Any:
    from winnow.execution.outcome import skipped_outcome

    if engine is None:  # nothing to run: the plan alone says what the run did
        return skipped_outcome(the_plan, progress)
    return engine.run(the_plan, session.state, session.artifacts, job_id, progress, stop)


def _record_failure(state: State, record: dict[str, Any], exc: BaseException, t0: float) -> None:
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


def _finish_record(record: dict[str, Any], the_plan: Plan, outcome: Any, wall: float) -> None:
    counts = {n: c.to_dict() for n, c in outcome.counts.items()}
    names = [s.name for s in the_plan.stages]
    first, last = counts[names[0]], counts[names[-1]]
    total_batches = len(the_plan.batches)
    processed_rows = first["rows_in"] if first["run"] else 0
    after: dict[str, Counter[str]] = {n: Counter(v) for n, v in the_plan.before.items()}
    for bp in the_plan.batches:
        for i, name in enumerate(names):
            if bp.actions[i] == SKIP:
                continue
            if bp.prior[i]:
                after[name][bp.prior[i]["status"]] -= 1  # type: ignore[index]
    for name, c in counts.items():
        after[name][BatchStatus.SUCCEEDED] += c["run"]
        after[name][BatchStatus.FAILED] += c["failed"]
    after_d = {n: {k: v for k, v in c.items() if v} for n, c in after.items()}
    delta = {
        n: {
            k: after_d[n].get(k, 0) - the_plan.before.get(n, {}).get(k, 0)
            for k in set(after_d[n]) | set(the_plan.before.get(n, {}))
            if after_d[n].get(k, 0) != the_plan.before.get(n, {}).get(k, 0)
        }
        for n in names
    }
    if outcome.storage_failure:
        status = JobStatus.FAILED
        record["error"] = ErrorRecord("StorageFailed", outcome.storage_failure).to_dict()
    elif outcome.interrupted:
        status = JobStatus.CANCELLED
    elif outcome.poisoned or outcome.integrity or any(f is None for f in outcome.finals):
        status = JobStatus.FAILED
    else:
        status = JobStatus.SUCCEEDED
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
        skipped_fraction=round(skipped_all / max(1, total_batches * len(names)), 4),
        throughput_rows_s=round(processed_rows / wall, 1) if wall > 0 else 0.0,
        state_after=after_d,
        delta=delta,
        errors=outcome.errors,
        poison_batches=outcome.poisoned,
        integrity_failures=outcome.integrity,
    )
    if outcome.tally is not None:
        record["accounting"] = outcome.tally.to_dict()


def _write_manifest(session: Session, job_id: str, the_plan: Plan, finals: list[Any]) -> str:
    fs, root = resolve(session.output_url, session.profile.storage_options)
    path = join(root, "manifests", session.pipeline.name, f"{job_id}.json")
    entries = []
    for bp, final in zip(the_plan.batches, finals, strict=True):
        entries.append(
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
        )
    import json

    body = {
        "job_id": job_id,
        "pipeline": session.pipeline.name,
        "stage": the_plan.stages[-1].name,
        "batches": entries,
    }
    write_atomic(fs, path, json.dumps(body, indent=1).encode())
    return to_url(fs, path)


def read_manifest(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    import json

    fs, path = resolve(url, storage_options)
    return dict(json.loads(fs.cat_file(path)))


def output_table(record: dict[str, Any], storage_options: dict[str, Any] | None = None) -> Any:
    """A job's output as one pyarrow Table, in source order."""
    import pyarrow as pa

    manifest = read_manifest(record["manifest"], storage_options)
    store = ArtifactStore(join(record["output_url"].rstrip("/"), "artifacts"), storage_options)
    tables = [
        store.read(ArtifactRef(**e["artifact"])) for e in manifest["batches"] if e["artifact"]
    ]
    return pa.concat_tables(tables) if tables else pa.table({})


def retry_session(
    state: str | None = None,
    job_id: str | None = None,
    profile: str | Profile | None = None,
    executor: str = "ray",
) -> Session:
    """The session that re-runs a job's failed batches: its pipeline, inputs and output.

    The job's own resolved profile is reused unless ``profile`` is given; a
    profile whose secrets were redacted in the record needs ``profile``.
    """
    st = open_state(state)
    st.check_version()
    if job_id is None:
        jobs = st.list_jobs()
        if not jobs:
            raise UsageError(f"state {st.display()!r} has no jobs to retry")
        job_id = jobs[0]["job_id"]
    record = st.read_job(job_id)
    if profile is None:
        recorded = record.get("profile") or {}
        if "***" in repr(recorded):
            raise UsageError(
                f"job {job_id}'s profile had secrets (redacted in its record); "
                "pass the profile again with --profile"
            )
        profile = Profile.model_validate(recorded)
    pipeline = record.get("pipeline_file") or record["pipeline"]
    if not os.path.exists(pipeline):
        pipeline = record["pipeline"]
    inputs = tuple(record.get("inputs") or ())
    request = RunRequest(pipeline, profile, inputs, record.get("output_url"), state)
    return resolve_session(request.but(executor=executor))
