"""A resolved invocation (``Session``): pipeline, profile, inputs, state and output.

``resolve_session`` turns a ``RunRequest`` into one, validating everything
before anything is written; ``plan`` asks the state what a run of it would
do. ``winnow.api`` runs a session; both are re-exported there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winnow.errors import UsageError
from winnow.history import History
from winnow.pipeline import Pipeline, find_pipeline_file, load_pipeline
from winnow.plan import Plan, make_plan
from winnow.profile import (
    Profile,
    apply_overrides,
    check_set_stages,
    load_profile,
    unused_stage_tables,
)
from winnow.request import RunRequest
from winnow.sources import SourceFile, memory
from winnow.storage.artifacts import ArtifactStore, output_store_url
from winnow.storage.state import State, default_state_url

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
    files: list[SourceFile] | None = None  # input data in memory, committed as chunks

    @property
    def rerun(self) -> str | None:
        """The stage that, with those after it, recomputes every batch."""
        return self.request.rerun if self.request else None


def open_state(url: str | None = None, storage_options: dict[str, Any] | None = None) -> State:
    """Open a state root (default ``$WINNOW_STATE`` or ``.winnow/state/v1``)."""
    return State(url or default_state_url(), storage_options)


def resolve_session(request: RunRequest, notify: Callable[[str], None] | None = None) -> Session:
    """Load everything a run needs and validate it.

    Writes nothing but sample inputs, or the request's data in memory,
    committed as input chunks to the artifact store (``sources.memory``).

    Args:
        request: what to run.
        notify: told before anything slow happens (writing a pipeline's sample
            inputs on its first run).
    """
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
    artifacts = ArtifactStore(output_store_url(output_url), prof.storage_options)
    pipeline_file = None if isinstance(pipeline, Pipeline) else str(find_pipeline_file(pipeline))
    files = None
    if request.data is not None:
        files = memory.commit(request.data, artifacts, prof.batch_rows, pipe.schema)
    inputs = [f.url for f in files] if files is not None else list(request.inputs)
    if not inputs:
        inputs = list(pipe.default_inputs)
        if not inputs and pipe.sample_inputs is not None:
            samples = os.path.join(SAMPLES_DIR, pipe.name)
            if notify is not None and not (os.path.isdir(samples) and os.listdir(samples)):
                notify(f"writing {pipe.name}'s sample inputs to {samples} (first run only)")
            inputs = pipe.sample_inputs(samples)
        if not inputs:
            raise UsageError(f"pipeline {pipe.name!r} needs --input (files, folders or globs)")
    return Session(
        pipe, prof, inputs, st, artifacts, output_url, notes, pipeline_file, request, files
    )


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
        files=session.files,
    )


def _history(session: Session) -> History:
    """What the last run of this pipeline recorded: stage fingerprints and inputs read."""
    history = History()
    name = session.pipeline.name
    last = session.state.newest_job(lambda j: j.get("pipeline") == name and bool(j.get("stages")))
    if last is not None:
        history.stages = {s["name"]: s for s in last["stages"]}
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
