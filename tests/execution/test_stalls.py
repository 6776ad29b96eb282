"""No silent stalls, on real local Ray: a batch that sleeps on its first try.

With speculation the batch runs again on the idle actor and the job ends
long before the sleep would; with a stall timeout the sleeping actor is
killed and the batch retried elsewhere, or the job fails naming stage, batch
and actor; while it straggles, the progress display and ``winnow status``
flag it. Every finished run's output and checkpoints equal a clean run's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from winnow import api
from winnow.execution.outcome import Progress
from winnow.execution.stalls import StallPolicy
from winnow.request import RunRequest
from winnow.tools import status as status_tool

STALLING = str(ROOT / "tests" / "pipelines" / "stalling.py")
# Flag past 1 s (or 3x the median): a cold actor's first batch on a busy machine stays under it.
FAST = ["batch_rows=10", "retry_backoff_s=0.01", "straggler_min_s=1", "straggler_factor=3"]
SLEEPER = 25  # the id whose batch (rows 20-29) sleeps on its first try
CIRCUMSTANCES = {"ts", "started_at", "duration_s", "process_s", "commit_s"}
CIRCUMSTANCES |= {"node", "node_id", "pid", "job_id"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """60 JSONL rows: six batches of ten."""
    path = tmp_path_factory.mktemp("inputs") / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(60)))
    return str(path)


def execute(
    where: Path,
    source: str,
    sets: list[str],
    progress: Progress | None = None,
    executor: str = "ray",
) -> dict[str, Any]:
    (where / "marks").mkdir(exist_ok=True)
    request = RunRequest(
        STALLING,
        "local-cpu",
        [source],
        str(where / "out"),
        str(where / "state"),
        [*FAST, f"sleepy.marks={where / 'marks'}", *sets],
    )
    return api.execute(api.resolve_session(request), executor=executor, progress=progress)


@dataclass
class Clean:
    """A clean run of the pipeline (nothing sleeps): where, and its job record."""

    where: Path
    record: dict[str, Any]


@pytest.fixture(scope="module")
def clean(local_ray: None, tmp_path_factory: pytest.TempPathFactory, source: str) -> Clean:
    where = tmp_path_factory.mktemp("clean")
    record = execute(where, source, [])
    assert record["status"] == "SUCCEEDED"
    return Clean(where, record)


def finals(record: dict[str, Any]) -> list[str]:
    manifest = api.read_manifest(record["manifest"])
    return [e["artifact"]["digest"] for e in manifest["batches"]]


def checkpoints(where: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per stage, per key, its checkpoint record less when/where it ran and its artifact's path."""
    store = api.open_state(str(where / "state")).checkpoints()
    return {
        stage: {
            k: {
                **{f: v for f, v in r.items() if f not in CIRCUMSTANCES | {"artifact"}},
                "digest": r["artifact"]["digest"],
            }
            for k, r in store.load(stage).records.items()
        }
        for stage in store.stages()
    }


def events(where: Path) -> list[dict[str, Any]]:
    return api.open_state(str(where / "state")).read_events().events


def same_as_clean(where: Path, clean: Clean, record: dict[str, Any]) -> None:
    """The output, checkpoints and row accounting are the clean run's."""
    reference = clean.record
    assert finals(record) == finals(reference)
    assert checkpoints(where) == checkpoints(clean.where)
    assert record["accounting"] == reference["accounting"]
    assert record["accounting"]["total"]["unaccounted"] == 0
    assert record["rows_out"] == reference["rows_out"] == 60


def counts(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stage, its batches and rows (less its busy time and straggler counts)."""
    circumstances = {"busy_s", "straggled", "speculated", "abandoned"}
    return {
        n: {k: v for k, v in c.items() if k not in circumstances}
        for n, c in record["counts"].items()
    }


class Flags(Progress):
    """Records what the runner tells a display about stragglers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def straggling(self, stage: str, count: int) -> None:
        self.calls.append((stage, count))


def sleeper_key(where: Path) -> str:
    """The sleepy stage's key of the batch that sleeps (rows 20-29)."""
    records = api.open_state(str(where / "state")).checkpoints().load("sleepy").records
    [key] = [k for k, r in records.items() if r["source"]["start"] == 20]
    return key


def flagged_then_cleared(flags: Flags) -> bool:
    """The sleepy stage's bar was flagged, and its flag cleared by the end."""
    sleepy = [count for stage, count in flags.calls if stage == "sleepy"]
    return bool(sleepy) and sleepy[0] == 1 and sleepy[-1] == 0


def stalled_once(record: dict[str, Any], clean: Clean) -> str:
    """A clean run's output and accounting, one Stalled error in stage sleepy; its message."""
    assert record["status"] == "SUCCEEDED"
    assert finals(record) == finals(clean.record)
    assert record["accounting"] == clean.record["accounting"]
    stalled = record["errors"]["Stalled"]
    assert stalled["count"] == 1 and stalled["stages"] == ["sleepy"]
    message = str(stalled["example"]["message"])
    assert "stage 'sleepy'" in message, message
    return message


def test_a_straggler_is_speculated_and_committed_once(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    flags = Flags()
    t0 = time.monotonic()
    record = execute(
        tmp_path, source, [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=60"], progress=flags
    )
    wall = time.monotonic() - t0
    assert record["status"] == "SUCCEEDED"
    assert wall < 30, f"the job waited for the straggler ({wall:.1f}s)"
    assert (tmp_path / "marks" / f"slept-{SLEEPER}").exists()  # it did straggle
    same_as_clean(tmp_path, clean, record)
    journal = events(tmp_path)
    kinds = Counter(e["type"] for e in journal)
    assert kinds["retry"] == 0 and kinds["batch_failed"] == 0
    committed = Counter((e["stage"], e["key"]) for e in journal if e["type"] == "checkpoint")
    assert len(committed) == 12 and set(committed.values()) == {1}  # once per batch and stage
    assert all(r["attempt"] == 1 for c in checkpoints(tmp_path).values() for r in c.values())
    mine = [e for e in journal if e.get("key") == sleeper_key(tmp_path)]
    kinds = Counter(e["type"] for e in mine)
    assert kinds["straggler"] == 1 and kinds["speculated"] == 1
    assert kinds["spare_started"] == 0  # the pool's other actor took the twin
    ends = [e["outcome"] for e in mine if e["type"] == "straggler_end"]
    assert ends == ["lost to its speculative twin"]
    assert flagged_then_cleared(flags)
    sleepy = record["counts"]["sleepy"]
    assert sleepy["straggled"] >= 1 and sleepy["speculated"] >= 1 and sleepy["abandoned"] == 0
    assert counts(record) == counts(clean.record)


def test_a_straggler_alone_in_its_pool_gets_a_spare_actor_for_its_twin(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    """The defaults (speculation on, no stall timeout) with one actor: no idle twin exists.

    A spare actor is started for the stage; the batches queued behind the
    hung one and then its twin run there, and the job ends long before the sleep.
    """
    alone = ["sleepy.min_actors=1", "sleepy.max_actors=1"]
    t0 = time.monotonic()
    record = execute(tmp_path, source, [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=60", *alone])
    wall = time.monotonic() - t0
    assert record["status"] == "SUCCEEDED"
    assert wall < 30, f"the job waited for the straggler ({wall:.1f}s)"
    assert (tmp_path / "marks" / f"slept-{SLEEPER}").exists()  # it did straggle
    same_as_clean(tmp_path, clean, record)
    assert counts(record) == counts(clean.record)
    journal = events(tmp_path)
    key = sleeper_key(tmp_path)
    [spare] = [e for e in journal if e["type"] == "spare_started"]
    assert (spare["stage"], spare["key"]) == ("sleepy", key)
    assert spare["actor"].endswith(":sleepy:1")  # the pool's second actor
    [speculated] = [e for e in journal if e["type"] == "speculated"]
    assert speculated["key"] == key and speculated["twin_actor"] == spare["actor"]
    ends = [e["outcome"] for e in journal if e.get("key") == key and e["type"] == "straggler_end"]
    assert ends == ["lost to its speculative twin"]


def test_a_straggler_alone_with_no_room_for_a_spare_is_abandoned_in_time(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    """No stall_timeout_s, one actor holding 1.5 of the 2 CPUs: neither a twin nor a spare.

    Past ten times its flag threshold (here 1 s) the hung attempt is abandoned
    and retried, instead of hanging the job for good; the message says why.
    """
    alone = ["sleepy.min_actors=1", "sleepy.max_actors=1", "sleepy.num_cpus=1.5"]
    t0 = time.monotonic()
    record = execute(tmp_path, source, [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=60", *alone])
    assert time.monotonic() - t0 < 45
    message = stalled_once(record, clean)
    assert "no room for a spare" in message, message
    assert "set stall_timeout_s" in message and ":sleepy:0" in message
    journal = events(tmp_path)
    assert not [e for e in journal if e["type"] in ("spare_started", "speculated")]
    sleepy = record["counts"]["sleepy"]
    assert (sleepy["abandoned"], sleepy["speculated"], sleepy["retried"]) == (1, 0, 1)


def test_when_the_straggler_wins_its_twins_late_result_is_discarded(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    # The first try sleeps 2.5 s, its twin (sent once it is flagged, at 1 s) 3 s: the
    # first try commits. Two batches in flight and a slow upper keep sleepy's pool busy
    # with later batches (it is retired, its actors killed, once no batch needs it), so
    # the twin's result comes in as it is, not as a killed actor's.
    sleeps = ["sleepy.sleep_s=2.5", "sleepy.again_s=3", "upper.delay_s=1.5", "max_in_flight=2"]
    record = execute(tmp_path, source, [f"sleepy.sleep_id={SLEEPER}", *sleeps])
    assert record["status"] == "SUCCEEDED"
    same_as_clean(tmp_path, clean, record)
    assert counts(record) == counts(clean.record)
    journal = events(tmp_path)
    committed = Counter((e["stage"], e["key"]) for e in journal if e["type"] == "checkpoint")
    assert len(committed) == 12 and set(committed.values()) == {1}
    sleepy = [e for e in journal if e.get("stage") == "sleepy"]  # upper's first may be flagged
    [discarded] = [e for e in sleepy if e["type"] == "speculation_discarded"]
    [straggler] = [e for e in sleepy if e["type"] == "straggler"]
    assert discarded["key"] == straggler["key"] and discarded["status"] == "SUCCEEDED", discarded
    kept = checkpoints(tmp_path)["sleepy"][straggler["key"]]
    assert discarded["digest"] == kept["digest"]  # content-addressed: the same bytes
    ends = [e["outcome"] for e in sleepy if e["type"] == "straggler_end"]
    assert ends == ["committed"]


def test_a_failed_twin_is_dropped_while_the_straggler_may_still_commit(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    sleeps = ["sleepy.sleep_s=3", "sleepy.again_fails=true", "max_attempts=1"]
    record = execute(tmp_path, source, [f"sleepy.sleep_id={SLEEPER}", *sleeps])
    assert record["status"] == "SUCCEEDED"  # one try allowed: the twin's failure was not one
    same_as_clean(tmp_path, clean, record)
    assert counts(record) == counts(clean.record) and record["errors"] == {}
    sleepy = [e for e in events(tmp_path) if e.get("stage") == "sleepy"]
    [discarded] = [e for e in sleepy if e["type"] == "speculation_discarded"]
    assert (discarded["status"], discarded["error"]) == ("FAILED", "RuntimeError")
    assert [e["outcome"] for e in sleepy if e["type"] == "straggler_end"] == ["committed"]


def test_past_the_stall_timeout_the_batch_is_retried_elsewhere(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    sets = [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=60", "speculate=false"]
    t0 = time.monotonic()
    record = execute(tmp_path, source, [*sets, "stall_timeout_s=5"])
    assert time.monotonic() - t0 < 40
    message = stalled_once(record, clean)
    assert "stall_timeout_s=5" in message
    assert "winnow:" in message and ":sleepy:" in message  # the actor's name
    abandoned = [e for e in events(tmp_path) if e["type"] == "stall_abandoned"]
    assert len(abandoned) == 1 and abandoned[0]["key"][:16] in message
    attempts = sorted(r["attempt"] for r in checkpoints(tmp_path)["sleepy"].values())
    assert attempts == [1, 1, 1, 1, 1, 2]  # the stalled batch committed on its second try
    slept = int((tmp_path / "marks" / f"slept-{SLEEPER}").read_text())
    store = api.open_state(str(tmp_path / "state")).checkpoints()
    kept = store.load("sleepy").records[abandoned[0]["key"]]
    assert kept["pid"] != slept  # committed by another process ...
    with pytest.raises(ProcessLookupError):
        os.kill(slept, 0)  # ... and the sleeping one is gone
    sleepy = record["counts"]["sleepy"]
    assert (sleepy["abandoned"], sleepy["speculated"], sleepy["retried"]) == (1, 0, 1)


def test_a_batch_that_stalls_past_its_attempts_fails_the_job_by_name(
    local_ray: None, tmp_path: Path, source: str
) -> None:
    sets = [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=60", "speculate=false"]
    record = execute(tmp_path, source, [*sets, "stall_timeout_s=5", "max_attempts=1"])
    assert record["status"] == "FAILED"
    assert len(record["poison_batches"]) == 1, record["poison_batches"]
    [poison] = record["poison_batches"]
    assert poison["stage"] == "sleepy" and poison["error_type"] == "Stalled"
    assert poison["source"]["start"] == 20
    message = poison["message"]
    assert poison["key"][:16] in message and "rows.jsonl rows 20-30" in message
    assert "winnow:" in message and ":sleepy:" in message
    assert record["accounting"]["total"]["unaccounted"] == 0


def test_a_straggler_is_flagged_in_status_while_it_runs(
    clean: Clean, tmp_path: Path, source: str
) -> None:
    flags = Flags()
    sets = [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=8", "speculate=false"]
    done: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: done.append(execute(tmp_path, source, sets, flags)))
    runner.start()
    state = api.open_state(str(tmp_path / "state"))
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90  # actors start slowly on a busy machine
    while not seen and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.3)
        if (tmp_path / "state").exists():
            listed = status_tool.status(state)["stragglers"]
            seen = [s for s in listed if s["stage"] == "sleepy"]
    runner.join(60)
    assert seen, "status never listed the straggler"
    [flagged] = seen
    assert ":sleepy:" in flagged["actor"] and flagged["running_s"] >= 1
    assert flagged["running_now_s"] >= flagged["running_s"]
    assert done[0]["status"] == "SUCCEEDED"
    same_as_clean(tmp_path, clean, done[0])
    assert status_tool.status(state)["stragglers"] == []  # the job ended
    assert flagged["key"] == sleeper_key(tmp_path)
    assert flagged_then_cleared(flags)


def test_the_local_executor_flags_a_straggler_it_cannot_stop(
    clean: Clean, tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = Flags()
    sets = [f"sleepy.sleep_id={SLEEPER}", "sleepy.sleep_s=2", "stall_timeout_s=1"]
    record = execute(tmp_path, source, sets, flags, executor="local")
    assert record["status"] == "SUCCEEDED"  # the timeout cannot apply: it ran to the end
    same_as_clean(tmp_path, clean, record)
    assert flagged_then_cleared(flags)
    flagged = [e for e in events(tmp_path) if e["type"] == "straggler"]
    assert [e["key"] for e in flagged if e["stage"] == "sleepy"] == [sleeper_key(tmp_path)]
    assert all("local executor" in e["actor"] for e in flagged)
    note = capsys.readouterr().err
    assert "stage 'sleepy', batch " in note and "s in this process (local executor)" in note


def test_the_flag_threshold_follows_the_stage_median() -> None:
    policy = StallPolicy(factor=5, min_s=10)
    assert policy.threshold(None) == 10  # no batch finished yet
    assert policy.threshold(0.5) == 10
    assert policy.threshold(4.0) == 20


def test_a_batch_is_expected_to_take_its_share_of_rows() -> None:
    """A skewed reduce partition ten times the usual size is not flagged at 3x the
    usual latency: the expectation is the stage's median per row times its rows."""
    from winnow.execution.flight import Flight
    from winnow.execution.outcome import StageCounts
    from winnow.execution.queues import Task
    from winnow.execution.stalls import Watchdog
    from winnow.plan import BatchPlan
    from winnow.records import BatchStatus, StageResult
    from winnow.sources import SourceBatch, SourceFile

    def task(rows: int) -> Task:
        file = SourceFile("g/partition-00000", "shards", None, 0, "v")
        plan = BatchPlan(SourceBatch(file, 0, 0, rows, "k"), ["k"], ["run"], [""], [None])
        return Task(Flight(0, plan), 0, None, 0)

    dog = Watchdog(StallPolicy(factor=5, min_s=1), ["reduce"], "j", lambda e: None,
                   Progress(), {"reduce": StageCounts()})  # fmt: skip
    for _ in range(3):
        dog.observe(task(1_000), StageResult(BatchStatus.SUCCEEDED, duration_s=2.0), "committed")
    assert dog.expected(task(1_000)) == pytest.approx(2.0)
    assert dog.expected(task(10_000)) == pytest.approx(20.0)  # a 10x partition: 10x the time
    assert dog.policy.threshold(dog.expected(task(10_000))) == pytest.approx(100.0)
    assert dog.policy.threshold(dog.expected(task(100))) == pytest.approx(1.0)  # min_s
