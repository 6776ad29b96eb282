"""OpenLineage events: each run emits START, then COMPLETE, FAIL or ABORT.

Off by default, and free when off: nothing is imported from ``openlineage``
unless lineage is on for a run. It is on when

- the profile's ``[lineage]`` table says ``enabled = true`` (``winnow run
  --lineage``, ``--set lineage=true``), or
- ``enabled`` is left out (auto) and OpenLineage is configured the
  OpenLineage way: ``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG``, an
  ``OPENLINEAGE__TRANSPORT__...`` variable, or an ``openlineage.yml`` in the
  working directory or ``~/.openlineage/``.

``enabled = false`` (``--no-lineage``) or ``OPENLINEAGE_DISABLED=true`` turns
it off. Events go to the profile's ``[lineage] transport`` table when it has
one (any OpenLineage transport: ``http``, ``file``, ``kafka``, ...), else
wherever OpenLineage's own configuration sends them.

Sending an event never fails a run, nor holds it up for long: the first
failure of a run is reported (through ``notify``), the run goes on, and
sends no more events. Events are sent on a thread (START while the run
works); once the work is done the run waits at most ``[lineage] wait_s``
(default 5 s) for them, so a backend that accepts a connection and never
answers (each try waiting out the transport's timeout, then retrying)
costs a run that long, not the transport's retries.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from winnow import extras
from winnow.plan import Plan
from winnow.profile import LineageSettings

Notify = Callable[[str], None]

# Variables through which OpenLineage's client finds a transport.
_ENV_EXACT = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG")
_ENV_PREFIX = "OPENLINEAGE__TRANSPORT"
_CONFIG_FILE = "openlineage.yml"


def environment_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether OpenLineage is configured in this process's environment (its own way).

    ``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG``, an ``OPENLINEAGE__TRANSPORT...``
    variable, or an ``openlineage.yml`` in the working directory or
    ``~/.openlineage/`` (where OpenLineage's client looks).
    """
    env = os.environ if env is None else env
    if any(env.get(k) for k in _ENV_EXACT) or any(k.startswith(_ENV_PREFIX) for k in env):
        return True
    folders = (Path.cwd(), Path.home() / ".openlineage")
    return any((folder / _CONFIG_FILE).is_file() for folder in folders)


def is_on(settings: LineageSettings, env: Mapping[str, str] | None = None) -> bool:
    """Whether a run with these settings emits events (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if settings.enabled is not None:
        return settings.enabled
    return bool(settings.transport) or environment_configured(env)


class NoLineage:
    """A run that emits nothing (lineage is off): entering and leaving cost nothing."""

    def __enter__(self) -> NoLineage:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Emitter:
    """An OpenLineage client that never raises; the first failure is reported once.

    Args:
        settings: the profile's ``[lineage]`` settings.
        notify: where the one warning goes.
        subject: what the events are about, for the warning (``job <id>``).
        strict: an explicit ``enabled = true`` without the ``lineage`` extra
            installed raises (a usage error, before a run starts) rather than warns.
    """

    def __init__(
        self, settings: LineageSettings, notify: Notify, subject: str, strict: bool = True
    ) -> None:
        self.notify = notify
        self.subject = subject
        self.wait_s = settings.wait_s
        self.warned = False
        self.client: Any = None
        if settings.enabled and strict:
            extras.require("openlineage.client", "OpenLineage events (--lineage)")
        try:
            extras.require("openlineage.client", "OpenLineage events")
            from openlineage.client import OpenLineageClient

            config = {"transport": dict(settings.transport)} if settings.transport else None
            self.client = OpenLineageClient(config=config)
        except Exception as exc:
            self.warn("set up OpenLineage", exc)

    def emit(self, build: Callable[[], Any], what: str, deadline: float) -> None:
        """Build an event and send it, waiting until ``deadline`` at most (``time.monotonic``).

        A failure of either, or no answer by then, is reported, not raised;
        after it the emitter sends nothing more: a backend that is down would
        cost each event the transport's retries again.
        """
        self.emit_in_background(build, what)(deadline)

    def emit_in_background(self, build: Callable[[], Any], what: str) -> Callable[[float], None]:
        """Build an event now and send it on a thread, so the run need not wait for it.

        Returns:
            What waits, until a deadline (``time.monotonic``), for the sending
            to end, and reports its failure (once); a send still going on then
            is given up, reported as a failure, and left to end on its thread.
        """
        if self.client is None or self.warned:
            return lambda deadline: None
        try:
            event = build()
        except Exception as exc:
            self.warn(f"build the {what} event", exc)
            return lambda deadline: None
        failure: list[Exception] = []

        def send() -> None:
            try:
                self.client.emit(event)
            except Exception as exc:
                failure.append(exc)

        thread = threading.Thread(target=send, name=f"winnow-lineage-{what}", daemon=True)
        thread.start()

        def wait(deadline: float) -> None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                late = TimeoutError(f"no answer within [lineage] wait_s = {self.wait_s:g} s")
                self.warn(f"send the {what} event", late)
            elif failure:
                self.warn(f"send the {what} event", failure[0])

        return wait

    def close(self, deadline: float) -> None:
        """Flush and close the transport (an asynchronous one sends what it holds until ``deadline``)."""
        if self.client is None:
            return
        try:
            self.client.close(timeout=max(0.01, deadline - time.monotonic()))
        except Exception as exc:
            self.warn("close the OpenLineage transport", exc)

    def warn(self, what: str, exc: Exception) -> None:
        """Report the first lineage failure of this emitter; later ones are quiet."""
        if self.warned:
            return
        self.warned = True
        self.notify(
            f"lineage: could not {what} for {self.subject} ({type(exc).__name__}: {exc}); "
            "the run goes on without lineage events"
        )


class LineageRun:
    """A Winnow job as an OpenLineage run: START on entering, its end on leaving.

    Leaving reads how the job ended from its record (``SUCCEEDED`` gives
    COMPLETE, ``FAILED`` FAIL with the error, ``CANCELLED`` ABORT), so the
    record must be final by then; an exception leaving the block is the FAIL
    (or, for an interrupt, ABORT) event's error.

    Args:
        the_plan: the job's plan (its input files, the pipeline's schema).
        record: the job's record, updated in place as the job runs.
        notify: where a lineage failure is reported (once).
    """

    def __init__(self, the_plan: Plan, record: dict[str, Any], notify: Notify) -> None:
        settings = the_plan.profile.lineage
        self.namespace = settings.namespace
        self.record = record
        self.files = list(the_plan.files)
        self.schema = the_plan.pipeline.schema
        self.format = the_plan.profile.artifact_format
        self.storage_options = the_plan.profile.storage_options
        self.emitter = Emitter(settings, notify, f"job {record['job_id']}")
        self.run_id = ""
        self.started: Callable[[float], None] = lambda deadline: None
        if self.emitter.client is not None:
            from winnow.lineage import events

            self.run_id = events.run_id(record)

    def __enter__(self) -> LineageRun:
        # START goes out while the run works: a slow or unreachable backend (its
        # transport retrying) delays the run only by what outlasts it.
        self.started = self.emitter.emit_in_background(lambda: self._event("START", None), "START")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.emitter.client is None:
            return  # not set up (reported): nothing to send, nothing of openlineage to import
        deadline = time.monotonic() + self.emitter.wait_s
        self.started(deadline)
        try:
            from winnow.lineage import events

            state = events.end_state(self.record.get("status"), exc)
        except Exception as problem:  # never let lineage change how a run ends
            self.emitter.warn("build the end event", problem)
            return
        self.emitter.emit(lambda: self._event(state, exc), state, deadline)
        self.emitter.close(deadline)

    def _event(self, state: str, exc: BaseException | None) -> Any:
        from winnow.lineage import events

        ended = state != "START"
        rows = (self.record.get("accounting") or {}).get("files") if ended else None
        output = events.read_output(self.record, self.storage_options) if ended else None
        return events.run_event(
            state,
            self.run_id,
            self.namespace,
            self.record,
            events.input_datasets(self.files, self.schema, rows),
            [events.output_dataset(self.record, output, self.format)],
            exc,
        )


def observe(the_plan: Plan, record: dict[str, Any], notify: Notify | None = None) -> Any:
    """The OpenLineage run of a job about to start (a no-op one when lineage is off).

    Use it as ``with observe(plan, record):`` around the job's work, its
    record final by the end of the block.

    Raises:
        UsageError: lineage is on explicitly (``--lineage``) but the
            ``lineage`` extra is not installed.
    """
    if not is_on(the_plan.profile.lineage):
        return NoLineage()
    return LineageRun(the_plan, record, notify or _stderr)


def exported(
    record: dict[str, Any],
    result: dict[str, Any],
    started_at: str,
    storage_options: dict[str, Any],
    notify: Notify | None = None,
) -> None:
    """Send the OpenLineage run (START, COMPLETE) of an export that has published.

    Lineage is on as for the exported job (its recorded ``[lineage]``
    settings, or OpenLineage's configuration); a transport whose secrets
    were redacted in the record gives way to OpenLineage's own configuration.
    Never raises.
    """
    settings = _recorded_settings(record)
    if not is_on(settings):
        return
    emitter = Emitter(settings, notify or _stderr, f"the export of job {record['job_id']}", False)
    if emitter.client is None:
        return
    from winnow.lineage import exports
    from winnow.storage.state import now_iso

    ended_at = now_iso()
    built: list[Any] = []

    def build(i: int) -> Any:
        if not built:
            built.extend(
                exports.export_events(
                    settings.namespace, record, result, started_at, ended_at, storage_options
                )
            )
        return built[i]

    deadline = time.monotonic() + emitter.wait_s
    emitter.emit(lambda: build(0), "START", deadline)
    emitter.emit(lambda: build(1), "COMPLETE", deadline)
    emitter.close(deadline)


def _recorded_settings(record: dict[str, Any]) -> LineageSettings:
    """The ``[lineage]`` settings a job record's profile holds (defaults if unreadable)."""
    data = dict((record.get("profile") or {}).get("lineage") or {})
    if "***" in repr(data.get("transport")):
        data["transport"] = {}  # redacted secrets: OpenLineage's own configuration instead
    try:
        return LineageSettings.model_validate(data)
    except ValueError:
        return LineageSettings()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
