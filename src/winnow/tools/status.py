"""``winnow status`` and ``winnow jobs``.

Jobs, queue depth, per-stage counts, failures, quarantined records and state damage.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from winnow.records import JOB_ACTIVE, BatchStatus, JobStatus
from winnow.storage.checkpoints import Damage
from winnow.storage.job_records import REPAIR_FIX
from winnow.storage.liveness import Liveness, liveness
from winnow.storage.state import State
from winnow.tools.verify import verify_state as verify_state

DAMAGE_FIX = (
    "each damaged line was skipped and its batch is recomputed by the next run; " + REPAIR_FIX
)
SUMMARY_KEYS = (
    "job_id",
    "pipeline",
    "status",
    "created_at",
    "finished_at",
    "wall_s",
    "rows_in",
    "rows_out",
    "bad_records",
    "throughput_rows_s",
    "skipped_fraction",
    "manifest",
    "output_url",
    "state_url",
    "ray_job_id",
)


def job_summary(record: dict[str, Any]) -> dict[str, Any]:
    """A job record's headline fields, counts and poison batches, with Ray's view or a note.

    Args:
        record: the job record (``state.read_job``).
    """
    out = {k: record.get(k) for k in SUMMARY_KEYS if k in record}
    if record.get("counts"):
        out["counts"] = record["counts"]
    if record.get("poison_batches"):
        out["poison_batches"] = record["poison_batches"]
    if record.get("ray"):
        out["ray"] = ray_view(record)
    elif (
        record.get("status") == JobStatus.RUNNING
        and liveness(record.get("pid"), record.get("host")) is Liveness.GONE
    ):
        out["note"] = "its process is gone (killed?); rerun the same command to finish"
    ray = out.get("ray") or {}
    if ray.get("note"):
        out["note"] = ray["note"]
    return out


def ray_view(record: dict[str, Any]) -> dict[str, Any]:
    """A submitted job's Ray side; Ray is asked only while our record is unfinished."""
    info = record["ray"]
    view = {"submission_id": info.get("submission_id"), "dashboard_url": info.get("dashboard_url")}
    if record.get("status") in JOB_ACTIVE:
        from winnow.execution.submit import ray_ended, ray_status

        live = ray_status(record) or {}
        view.update(live)
        if ray_ended(live.get("status")):
            view["note"] = (
                f"Ray says the job is {live['status']} but its record was never finished "
                f"(driver lost): {live.get('message', '')}".strip()
            )
    return view


def _pipeline_order(stages: list[str], jobs: list[dict[str, Any]]) -> list[str]:
    """The state's stages in pipeline order.

    The newest job's pipeline first, then the stages of older jobs' pipelines,
    then any stage no job record names.
    """
    from winnow.tools.inspect import stage_order  # inspect imports this module

    order: list[str] = []
    for job in jobs:
        order += [s for s in stage_order(job) if s in stages and s not in order]
    return order + [s for s in stages if s not in order]


# -- status -----------------------------------------------------------------
def status(state: State, recent: int = 10) -> dict[str, Any]:
    """Jobs, queue depth, per-stage counts, failures and quarantined records.

    ``damage`` lists the state lines and files that could not be read
    ("file:line: reason"); they are skipped, and ``damage_fix`` says how to mend them.
    """
    listing = state.job_listing()
    jobs = listing.jobs
    damage: list[Damage] = list(listing.damaged)
    queue = Counter(str(j.get("status", "UNKNOWN")).lower() for j in jobs)
    store = state.checkpoints()
    stages: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    for stage in _pipeline_order(store.stages(), jobs):
        loaded = store.load(stage)
        damage.extend(loaded.damage)
        records = loaded.records.values()
        counts = Counter(r["status"] for r in records)
        ok = [r for r in records if r["status"] == BatchStatus.SUCCEEDED]
        stages[stage] = {
            "succeeded": counts[BatchStatus.SUCCEEDED],
            "failed": counts[BatchStatus.FAILED],
            "rows_in": sum(int(r.get("rows_in") or 0) for r in ok),
            "rows_out": sum(int(r.get("rows_out") or 0) for r in ok),
            "quarantined_records": sum(int(r.get("bad_records") or 0) for r in ok),
        }
        for r in records:
            if r["status"] == BatchStatus.FAILED:
                err = r.get("error") or {}
                failures.append(
                    {
                        "stage": stage,
                        "key": r["key"],
                        "attempt": r.get("attempt"),
                        "error_type": err.get("type"),
                        "message": str(err.get("message", ""))[:300],
                        "source": r.get("source"),
                        "job_id": r.get("job_id"),
                    }
                )
    latest = next((j for j in jobs if j.get("throughput_rows_s") is not None), None)
    stragglers = open_stragglers(state, jobs)
    return {
        "state_url": state.display(),
        "queue": {
            "pending": queue["pending"],
            "running": queue["running"],
            "succeeded": queue["succeeded"],
            "failed": queue["failed"],
            "cancelled": queue["cancelled"],
            "submitted": queue["submitted"],
        },
        "jobs": [job_summary(j) for j in jobs[:recent]],
        "stages": stages,
        "failed_batches": len(failures),
        "failures": failures[:50],
        "quarantined_records": sum(s["quarantined_records"] for s in stages.values()),
        "throughput_rows_s": latest.get("throughput_rows_s") if latest else None,
        "stragglers": stragglers,
        "damage": [str(d) for d in damage],
        "damage_fix": DAMAGE_FIX if damage else None,
    }


def open_stragglers(state: State, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batches of running jobs flagged as stragglers and not ended since.

    From the event journal (the driver flushes it every few seconds): a
    ``straggler`` event whose batch has no ``straggler_end`` event after it,
    with ``running_now_s``, how long it has run by now.
    """
    running = {j.get("job_id") for j in jobs if j.get("status") == JobStatus.RUNNING}
    if not running:
        return []
    flagged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in state.read_events().events:
        if e.get("job_id") not in running:
            continue
        batch = (e.get("job_id"), e.get("stage"), e.get("key"))
        if e.get("type") == "straggler":
            flagged[batch] = {
                k: e.get(k)
                for k in ("job_id", "stage", "key", "actor", "running_s", "threshold_s", "ts")
            }
        elif e.get("type") == "straggler_end":
            flagged.pop(batch, None)
    now = datetime.now(UTC)
    for item in flagged.values():  # how long it has run by now (the clocks of one host)
        try:
            since = (now - datetime.fromisoformat(str(item["ts"]))).total_seconds()
            item["running_now_s"] = round(float(item["running_s"] or 0) + since, 1)
        except (TypeError, ValueError):
            item["running_now_s"] = item["running_s"]
    return list(flagged.values())
