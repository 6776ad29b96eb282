"""The public Python API; the CLI is a thin layer over these functions.

>>> import winnow
>>> result = winnow.run("demo", profile="local-cpu")
>>> result.status == "SUCCEEDED"
True
>>> table = result.to_arrow()  # or to_pandas(), to_ray_dataset(), to_hf()
>>> again = winnow.run("demo", input=table, executor="local")  # data in memory

``winnow.run`` returns a :class:`~winnow.result.RunResult`; ``execute`` (what
the CLI and the gateway call) returns the job record, a dict.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from winnow import jobs, lineage
from winnow.errors import StorageFailed, UsageError, WinnowError
from winnow.execution.executor import DEFAULT_EXECUTOR, Executor, check_executor, executor_for
from winnow.execution.outcome import Progress
from winnow.pipeline import Pipeline
from winnow.plan import Plan
from winnow.profile import Profile
from winnow.request import RunRequest
from winnow.result import RunResult

# Re-exported: resolving a request and planning it are part of the public API.
from winnow.session import DEFAULT_OUTPUT as DEFAULT_OUTPUT
from winnow.session import Session as Session
from winnow.session import damage_notes as damage_notes
from winnow.session import open_state as open_state
from winnow.session import plan as plan
from winnow.session import resolve_session as resolve_session

# Re-exported: reading a job's output is part of the public API (winnow.output_table).
from winnow.storage.manifests import output_refs as output_refs
from winnow.storage.manifests import output_table as output_table
from winnow.storage.manifests import read_manifest as read_manifest


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
    progress: bool | Progress | None = None,
    input: Any = None,
) -> RunResult:
    """Resolve and run a pipeline; return its result.

    What ``winnow run`` does, from Python or a notebook: committed batches are
    skipped, the job is recorded in the state, and a job whose batches failed
    ends FAILED without raising (check ``result.ok``).

    Args:
        pipeline: a pipeline name, file or object, or a whole ``RunRequest``
            (then the other request arguments must be left out).
        profile: a profile name, TOML path or ``Profile`` (None: the defaults).
        inputs: files, folders or globs (None: the pipeline's default inputs).
        output: where artifacts and manifests go.
        state: the state root URL.
        sets: ``KEY=VALUE`` overrides of profile keys or stage parameters.
        verify: how committed artifacts are checked before a skip.
        address: the Ray cluster to attach to (default: an embedded local Ray).
        rerun: a stage to recompute every batch of, with the stages after it.
        executor: ``ray`` or ``local`` (this process, no Ray).
        progress: per-stage bars. None (default): in a notebook an HTML table
            redrawn in place, in a terminal rich bars on stderr, elsewhere
            nothing; True: always; False: never; or a ``Progress`` to report to.
        input: data in memory instead of ``inputs``: a ``pyarrow.Table`` (or
            ``RecordBatchReader``), ``pandas.DataFrame``, ``ray.data.Dataset``
            (streamed) or Hugging Face dataset, committed as content-addressed chunks of
            ``batch_rows`` (see ``sources.memory``): resumable like files.

    Returns:
        The job's :class:`~winnow.result.RunResult`: id, status, counts, rows,
        wall time and manifest, its output as ``to_arrow()``, ``to_pandas()``,
        ``to_ray_dataset()`` or ``to_hf()``, and the whole job record as ``record``.

    Raises:
        UsageError: bad input or configuration (nothing was written).
        LockHeld: another live run of this pipeline holds the state's lock.
    """
    if isinstance(pipeline, RunRequest):
        request = pipeline if input is None else pipeline.but(data=input)
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
            input,
        )
    display = _progress(progress)
    # Where progress is shown, so is the note before a first run writes sample inputs.
    session = resolve_session(request, _stderr if display is not None else None)
    record = execute(session, address=address, progress=display)
    return RunResult.from_record(record, session.profile.storage_options, address)


def _progress(progress: bool | Progress | None) -> Progress | None:
    from winnow import progress as display

    if isinstance(progress, Progress):
        return progress
    if progress is None:
        return display.auto_progress()
    if not progress:
        return None
    return display.NotebookBars() if display.in_notebook() else display.StageBars()


def execute(
    session: Session,
    verify: str | None = None,
    address: str | None = None,
    progress: Progress | None = None,
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
    job_id = job_id or jobs.new_job_id(session.pipeline.name)
    for line in damage_notes(the_plan):
        (notify or _stderr)(line)
    lock, note = state.locks().acquire(session.pipeline.name, job_id)
    try:
        if note:
            (notify or _stderr)(note)
        # Holding the lock proves no other run of this pipeline is alive here.
        for lost in jobs.reconcile_lost_jobs(state, session.pipeline.name, exclude=job_id):
            (notify or _stderr)(
                f"job {lost} was left RUNNING by a driver that is gone; marked FAILED"
            )
        # Only a plan with work needs an executor (an all-skipped rerun starts no Ray).
        engine = executor_for(executor, address, reuse_actors, notify) if the_plan.work else None
        return _execute_locked(
            session, the_plan, job_id, engine, progress, stop, t0, started, notify or _stderr
        )
    finally:
        lock.release()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _execute_locked(
    session: Session,
    the_plan: Plan,
    job_id: str,
    engine: Executor | None,
    progress: Progress | None,
    stop: threading.Event | None,
    t0: float,
    started: threading.Event | None = None,
    notify: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    state = session.state
    record = jobs.started_record(the_plan, state, job_id, session.pipeline_file, session.output_url)
    # OpenLineage events (START, then COMPLETE/FAIL/ABORT) when configured; the one
    # hook of lineage into a run. Built before anything is written: an explicit
    # --lineage without its extra exits 2 clean.
    lineage_run = lineage.observe(the_plan, record, notify)
    if engine is not None:
        # Prepare the executor (Ray: attach and size the pools, once per run) before
        # anything is written: a wrong address or a request the cluster can never
        # host exits 2 clean.
        engine.prepare(the_plan)
    jobs.publish_start(state, record, the_plan)
    if started is not None:
        started.set()
    with lineage_run:
        try:
            try:
                outcome = _run_plan(session, the_plan, job_id, engine, progress, stop)
            finally:
                if engine is not None:
                    engine.shutdown()
            jobs.finish_record(record, the_plan, outcome, time.monotonic() - t0)
            record["manifest"] = jobs.write_manifest(
                the_plan, job_id, session.output_url, outcome.finals
            )
            state.write_job(record)
        except BaseException as exc:
            jobs.record_failure(state, record, exc, t0)
            if isinstance(exc, OSError) and not isinstance(exc, WinnowError):
                raise StorageFailed(
                    f"job {job_id} stopped: storage failed ({type(exc).__name__}: {exc}). "
                    "Committed batches stay committed; fix the storage (free space, permissions) "
                    "and rerun the same command"
                ) from None
            raise
        jobs.publish_end(state, record, the_plan)
    return record


def _run_plan(
    session: Session,
    the_plan: Plan,
    job_id: str,
    engine: Executor | None,
    progress: Progress | None,
    stop: threading.Event | None,
) -> Any:
    from winnow.execution.segments import run_segments

    # With no engine (nothing to run) the plan alone says what the run did; a
    # grouping stage's reduce side runs as a second segment after its map side.
    return run_segments(the_plan, engine, session.state, session.artifacts, job_id, progress, stop)


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
