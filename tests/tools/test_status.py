"""``winnow status``: the stragglers of running jobs, from the event journal."""

from __future__ import annotations

from pathlib import Path

from winnow.storage.state import State, event
from winnow.tools.status import open_stragglers


def flagged(job: str, key: str) -> dict[str, object]:
    return event(
        "straggler", job, stage="embed", key=key, actor=f"winnow:{job}:embed:0", running_s=12.5
    )


def test_a_straggler_is_listed_while_its_job_runs_until_it_ends(tmp_path: Path) -> None:
    state = State(str(tmp_path / "state"))
    state.append_events([flagged("j1", "k1"), flagged("j1", "k2"), flagged("j0", "k9")])
    running = [{"job_id": "j1", "status": "RUNNING"}, {"job_id": "j0", "status": "FAILED"}]
    listed = open_stragglers(state, running)
    assert [(s["job_id"], s["key"]) for s in listed] == [("j1", "k1"), ("j1", "k2")]
    assert listed[0]["actor"] == "winnow:j1:embed:0" and listed[0]["running_s"] == 12.5
    assert 12.5 <= listed[0]["running_now_s"] < 60  # flagged at 12.5 s, a moment ago
    state.append_events(
        [event("straggler_end", "j1", stage="embed", key="k1", outcome="committed")]
    )
    assert [s["key"] for s in open_stragglers(state, running)] == ["k2"]
    assert open_stragglers(state, [{"job_id": "j1", "status": "SUCCEEDED"}]) == []
