"""The trust battery (issue 22): a seeded campaign that tries to break the trust contract.

One state and one output root, a clean run whose export is the reference, then:
rounds of damage (artifacts and quarantine artifacts flipped, cut short or
deleted; a garbage line put into or over a checkpoint segment line; a job
record damaged; a torn or garbage line in the event journal), each followed by
``verify --full`` (every artifact damage found), ``verify --repair`` (segments
and job records mended exactly) and a rerun (exactly the damaged batches
recomputed); then SIGKILLs at seeded moments of ``winnow run`` (the driver, and
a stage actor), ``winnow export`` (to a file and to a folder) and ``winnow gc
--apply``, each followed by the same command. At the end ``verify --full`` is
clean, a run is all skipped, its export is the reference byte for byte, no row
is unaccounted for and no job is left RUNNING. Every CLI call is a real
subprocess on a real local Ray. ``WINNOW_BATTERY_SEED=N`` replays campaign N's draws.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from random import Random
from typing import Any

import pytest

from tests import processes
from tests.conftest import free_port, run_cli
from tests.e2e import battery
from tests.e2e.battery import Tally

PACE_S = "0.12"  # each batch of each stage takes this long: kills land mid-run
EXPORT_TMP = ".winnow-tmp-"


class Campaign:
    """The campaign's one state/output pair, its reference export and its tally."""

    def __init__(self, tmp: Path, inputs: list[str]) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.out = tmp / "out"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.exports = tmp / "exports"  # one folder per export target: its temporaries beside it
        for name in ("check", "file", "folder"):
            (self.exports / name).mkdir(parents=True)
        # Two streams, so that where the kills land does not move the damage, and the
        # other way round.
        self.rng = Random(battery.SEED)
        self.kill_rng = Random(f"{battery.SEED}-kills")
        self.tally = Tally()
        self.notes: list[str] = []  # what did not hold, in words
        self.details: list[str] = []  # where each kill landed
        self.args = [
            "run",
            "tests/pipelines/paced.py",
            "--set",
            "batch_rows=300",
            "--set",
            "checkpoint_flush_every=3",  # commits reach the state in small steps mid-run
            "--set",
            f"pace.delay_s={PACE_S}",
            "--set",
            f"upper.delay_s={PACE_S}",
            "--state",
            str(self.state),
            "--output",
            str(self.out),
            *[a for i in inputs for a in ("--input", i)],
        ]
        self.where = ["--state", str(self.state)]

    # -- commands -------------------------------------------------------------
    def cli(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = run_cli(*args, timeout=300)
        assert "Traceback" not in done.stderr, f"{args}: a traceback\n{done.stderr}"
        if expect is not None:
            assert done.returncode == expect, (
                f"{args}: exit {done.returncode}, not {expect}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, *args: str, expect: int | None = 0) -> dict[str, Any]:
        done = self.cli(*args, "--json", expect=expect)
        return dict(json.loads(done.stdout))

    def run(self) -> dict[str, Any]:
        """The campaign's one run command, to its end; its rows must all be accounted for."""
        record = self.json(*self.args)
        assert record["status"] == "SUCCEEDED", record
        self.account(record)
        return record

    def account(self, record: dict[str, Any]) -> None:
        unaccounted = record["accounting"]["total"]["unaccounted"]
        self.tally.rows_unaccounted += unaccounted
        if unaccounted:
            self.notes.append(f"job {record['job_id']}: {unaccounted} rows unaccounted")

    def export(self, job_id: str, to: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return self.cli("export", job_id, "--to", str(to), *self.where, expect=expect)

    def verify_clean(self) -> bool:
        found = self.json("verify", "--full", *self.where, expect=None)
        problems = found["mismatches"] + found["manifest_problems"] + found["damage"]
        if problems:
            self.notes.append(f"verify --full not clean: {problems}")
        return not problems

    def exports_reference(self, job_id: str) -> bool:
        to = self.exports / "check" / f"{job_id}.parquet"
        self.export(job_id, to)
        same = to.read_bytes() == self.reference
        to.unlink()
        if not same:
            self.notes.append(f"export of {job_id} differs from the clean run's")
        return same

    # -- the clean start ----------------------------------------------------------
    def start(self) -> dict[str, Any]:
        clean = self.run()
        assert clean["bad_records"] > 0  # the demo inputs hold malformed lines: quarantine
        self.export(clean["job_id"], self.tmp / "clean.parquet")
        self.reference = (self.tmp / "clean.parquet").read_bytes()
        self.export(clean["job_id"], self.tmp / "clean-folder")
        self.reference_folder = folder_bytes(self.tmp / "clean-folder")
        assert len(self.reference_folder) > 2  # parts and the marker
        return clean

    # -- damage -------------------------------------------------------------------
    def damage_round(self, segment_mode: str, other: str) -> None:
        rng = self.rng
        targets = battery.artifact_targets(self.state)
        outputs = [t for t in targets if t.which == "output"]
        quarantines = [t for t in targets if t.which == "quarantine"]
        assert quarantines, "no quarantine artifact to damage"
        chosen = [*rng.sample(outputs, 2), rng.choice(quarantines)]
        modes = dict(zip(chosen, rng.sample(["flip", "truncate", "delete"], 3), strict=True))
        for t in chosen:
            battery.corrupt_file(Path(t.uri), modes[t], rng)
        lost = {(t.stage, t.key) for t in chosen}
        segment, line, repaired, gone = self.damage_segment(segment_mode, lost)
        lost |= gone
        other_check = self.damage_other(other)

        found = self.json("verify", "--full", *self.where, expect=1)
        seen = {(m["stage"], m["key"], m["artifact"], m["uri"]) for m in found["mismatches"]}
        for t in chosen:
            caught = (t.stage, t.key, t.which, t.uri) in seen
            self.tally.attempt(f"corrupt {t.which} artifact: {modes[t]}", caught)
            if not caught:
                self.notes.append(f"verify --full missed {modes[t]} of {t}")
        extra = seen - {(t.stage, t.key, t.which, t.uri) for t in chosen}
        if extra:
            self.notes.append(f"verify --full reported undamaged artifacts: {extra}")
        at = f"{segment}:{line}: "
        reported = any(d.startswith(at) for d in found["damage"])

        mended = self.json("verify", "--repair", *self.where, expect=1)
        fixed = str(segment) in {r["file"] for r in mended["repairs"]}
        # A segment left with no record goes; any other keeps its good lines as they were.
        exact = segment.read_bytes() == repaired if segment.exists() else repaired == b""
        self.tally.attempt(
            f"corrupt checkpoint segment: {segment_mode}", reported and fixed and exact
        )
        if not (reported and fixed and exact):
            self.notes.append(
                f"segment {segment_mode} at {at}: reported {reported}, repaired {fixed}, "
                f"exact {exact}; damage {found['damage']}"
            )
        other_check(found, mended)

        rerun = self.run()
        redone = battery.committed_by(self.state, rerun["job_id"])
        runs = {s: c["run"] for s, c in rerun["counts"].items()}
        expected = {s: sum(1 for stage, _ in lost if stage == s) for s in runs}
        exact = redone == lost and runs == expected
        self.tally.attempt("rerun recomputes exactly the damaged batches", exact)
        if not exact:
            self.notes.append(f"rerun ran {runs}, expected {expected}; {redone ^ lost} differ")
        self.tally.attempt(
            "state clean and output unchanged after the round",
            self.verify_clean() and self.exports_reference(rerun["job_id"]),
        )

    def damage_segment(
        self, mode: str, lost: set[tuple[str, str]]
    ) -> tuple[Path, int, bytes, set[tuple[str, str]]]:
        """Garbage into (``insert``) or over (``overwrite``) a segment line.

        Returns:
            the segment, the damaged line's number, the bytes a repair must
            leave, and the batches the damage costs.
        """
        lines = battery.segment_lines(self.state)
        if mode == "insert":
            segments = sorted({x.path for x in lines if sum(y.path == x.path for y in lines) >= 2})
            segment = self.rng.choice(segments)
            before = segment.read_bytes()
            return segment, battery.insert_garbage(segment, self.rng), before, set()
        keys = [(x.stage, x.record["key"]) for x in lines if x.record]
        only = [
            x
            for x in lines
            if x.record
            and x.record["status"] == "SUCCEEDED"
            and keys.count((x.stage, x.record["key"])) == 1
            and (x.stage, x.record["key"]) not in lost
        ]
        victim = self.rng.choice(only)
        kept = victim.path.read_bytes().splitlines(keepends=True)
        del kept[victim.number - 1]
        battery.overwrite_line(victim.path, victim.number, self.rng)
        return victim.path, victim.number, b"".join(kept), {(victim.stage, victim.record["key"])}

    def damage_other(self, kind: str) -> Any:
        """Damage a job record or the journal; return the check to run after verify."""
        if kind == "job record":
            path = self.rng.choice(sorted((self.state / "jobs").glob("*.json")))
            mode = battery.damage_job_record(path, self.rng)
            damaged = path.read_bytes()

            def check_job(found: dict[str, Any], mended: dict[str, Any]) -> None:
                reported = any(d.startswith(f"{path}: ") for d in found["damage"])
                backups = [r["backup"] for r in mended["repairs"] if r["file"] == str(path)]
                aside = not path.exists() and backups and Path(backups[0]).read_bytes() == damaged
                listed = self.cli("jobs", *self.where).returncode == 0
                self.tally.attempt(
                    f"corrupt job record: {mode}", bool(reported and aside and listed)
                )
                if not (reported and aside):
                    self.notes.append(f"job record {path} ({mode}): reported {reported}, {aside=}")

            return check_job
        if kind == "journal torn line":
            where = battery.append_to_journal(self.state, b'{"ts": "2026-01-01", "type": "tor')
            return lambda found, mended: self.check_journal("torn line", where)
        garbage = self.rng.choice(battery.JOURNAL_GARBAGE)
        where = battery.append_to_journal(self.state, garbage + b"\n")
        return lambda found, mended: self.check_journal("garbage line", where)

    def check_journal(self, mode: str, where: str) -> None:
        """A journal line that is no event: runs, verify and status go on (they did, to get
        here); ``inspect job`` names it (a torn line: listed; garbage: exit 2, file and line)."""
        self.cli("status", *self.where)
        job = next(iter(sorted((self.state / "jobs").glob("*.json")))).stem
        shown = self.cli("inspect", "job", "--id", job, "--json", *self.where, expect=None)
        file, line = where.rsplit(":", 1)
        if mode == "torn line":
            named = shown.returncode == 0 and where in json.loads(shown.stdout)["journal_torn"]
        else:
            message = " ".join(shown.stderr.split())
            named = shown.returncode == 2 and file in message and f"line {line}" in message
            named = named and "--recover" in message
        self.tally.attempt(f"corrupt event journal: {mode}", named)
        if not named:
            self.notes.append(f"journal {mode} at {where}: inspect job said {shown.stderr[-400:]}")

    def mend_journal(self) -> None:
        """``winnow gateway start --recover`` (the fix the messages name), then a clean journal."""
        run_dir = self.tmp / "gateway"
        gateway = processes.start(
            ["gateway", "start", "--foreground", "--recover", "--run-dir", str(run_dir),
             "--port", str(free_port()), *self.where],
            log=self.logs / "gateway",
        )  # fmt: skip
        log = Path(f"{self.logs / 'gateway'}.err")
        recovered = processes.wait_for(lambda: "journal recovered" in log.read_text(), 60, 0.05)
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=60) == 0, log.read_text()[-2000:]
        job = next(iter(sorted((self.state / "jobs").glob("*.json")))).stem
        shown = self.json("inspect", "job", "--id", job, *self.where)
        assert recovered and shown["journal_torn"] == [], log.read_text()[-2000:]

    # -- kills ----------------------------------------------------------------------
    def make_work(self) -> None:
        stage = self.kill_rng.choice(["pace", "upper"])
        self.cli("invalidate", stage, "--all", *self.where)

    def run_to_moment(self, name: str, latest: float) -> subprocess.Popen[bytes] | None:
        """Start the run command with work to do; at a seeded moment after its stage
        actors are up, return it if it still runs, else None (its rows accounted)."""
        self.make_work()
        proc = processes.start([*self.args, "--json"], log=self.logs / name)
        moment = self.kill_rng.uniform(0.1, latest)
        begun = lambda: bool(processes.stage_workers(proc.pid))  # noqa: E731
        if processes.alive_at_moment(proc, begun, moment, step=0.05):
            return proc
        assert proc.wait() == 0, Path(f"{self.logs / name}.err").read_text()[-2000:]
        self.account(json.loads(Path(f"{self.logs / name}.out").read_text()))
        return None

    def kill_driver(self, n: int) -> bool:
        for attempt in range(5):
            proc = self.run_to_moment(f"driver-{n}-{attempt}", latest=2.0)
            if proc is not None:
                processes.kill_tree(proc)
                break
        else:
            raise AssertionError("the run always finished before its seeded moment")
        running = [
            j["job_id"] for j in map(read_json, (self.state / "jobs").glob("*.json"))
            if j["status"] == "RUNNING"
        ]  # fmt: skip
        assert len(running) == 1, f"the killed run's job record is not RUNNING: {running}"
        killed = running[0]
        done = battery.committed_by(self.state, killed)
        self.details.append(f"driver kill {n}: {len(done)} batches committed before it")
        intact = self.verify_clean()  # nothing half-written is marked done
        resumed = self.run()  # the same command again
        redone = done & battery.committed_by(self.state, resumed["job_id"])
        lost = read_json(self.state / "jobs" / f"{killed}.json")
        marked = lost["status"] == "FAILED" and lost["error"]["type"] == "DriverLost"
        if redone or not marked:
            self.notes.append(f"driver kill {n}: redone {len(redone)} committed, {lost['status']}")
        return intact and not redone and marked and self.exports_reference(resumed["job_id"])

    def kill_worker(self, n: int) -> bool:
        for attempt in range(5):
            name = f"worker-{n}-{attempt}"
            proc = self.run_to_moment(name, latest=1.5)
            if proc is None:
                continue
            workers = processes.stage_workers(proc.pid)
            if workers:
                os.kill(self.kill_rng.choice(sorted(workers)), signal.SIGKILL)
                break
            assert proc.wait(timeout=300) == 0
            self.account(json.loads(Path(f"{self.logs / name}.out").read_text()))
        else:
            raise AssertionError("the run always finished before its seeded moment")
        code = proc.wait(timeout=300)
        out = Path(f"{self.logs / name}.out").read_text()
        if code != 0:
            self.notes.append(f"worker kill {n}: the run exited {code}: {out[-500:]}")
            return False
        record = json.loads(out)
        self.account(record)
        retried = sum(c["retried"] for c in record["counts"].values())
        self.details.append(f"worker kill {n}: the run finished, {retried} batches retried")
        return (
            record["status"] == "SUCCEEDED"
            and self.verify_clean()
            and self.exports_reference(record["job_id"])
        )

    def kill_export(self, n: int, to: Path, job_id: str) -> bool:
        before = folder_bytes(to) if to.is_dir() else to.read_bytes() if to.exists() else None
        for attempt in range(12):
            proc = processes.start(
                ["export", job_id, "--to", str(to), *self.where],
                log=self.logs / f"export-{n}-{attempt}",
            )
            moment = self.kill_rng.uniform(0, 0.04)
            if processes.alive_at_moment(proc, lambda t=to: bool(temporaries(t)), moment):
                processes.kill_tree(proc)
                break
            assert proc.wait() == 0
        else:
            raise AssertionError("every export finished before its seeded moment")
        now = folder_bytes(to) if to.is_dir() else to.read_bytes() if to.exists() else None
        whole = (now is None and before is None) or now == self.expected(to)
        where = "absent" if now is None else "complete" if now == self.expected(to) else "DAMAGED"
        self.details.append(f"export kill {n} to {to.name}: target {where} after it")
        stray = [p.name for p in to.parent.iterdir() if p != to and EXPORT_TMP not in p.name]
        self.export(job_id, to)  # the same command again
        again = self.expected(to) == (folder_bytes(to) if to.is_dir() else to.read_bytes())
        if not (whole and again and not stray):
            self.notes.append(f"export kill {n} to {to}: {whole=} {again=} {stray=}")
        return whole and again and not stray

    def expected(self, to: Path) -> Any:
        return self.reference_folder if to.suffix != ".parquet" else self.reference

    def kill_gc(self, n: int) -> bool:
        artifacts = self.out / "artifacts"
        for attempt in range(8):
            planted = battery.plant_unreferenced(artifacts, 5000, self.kill_rng)
            listed = self.json("gc", "--grace", "0", *self.where)["candidates"]
            paths = {Path(c["path"]) for c in listed}
            used = paths & referenced(self.state)
            if used or not planted <= paths:
                self.notes.append(f"gc {n} lists referenced {used}, misses {planted - paths}")
                return False
            first = Path(listed[0]["path"])
            gc = ["gc", "--apply", "--grace", "0", *self.where]
            proc = processes.start(gc, log=self.logs / f"gc-{n}-{attempt}")
            moment = self.kill_rng.uniform(0, 0.08)
            if processes.alive_at_moment(proc, lambda f=first: not f.exists(), moment):
                processes.kill_tree(proc)
                break
            assert proc.wait() == 0
        else:
            raise AssertionError("every gc finished before its seeded moment")
        left = sum(p.exists() for p in planted)
        self.details.append(f"gc kill {n}: {left} of {len(planted)} unreferenced files left")
        intact = self.verify_clean()  # no referenced artifact went
        self.json(*gc)  # the same command again
        cleared = not any(p.exists() for p in planted)
        if not (intact and cleared):
            self.notes.append(f"gc kill {n}: {left} of {len(planted)} left; {intact=} {cleared=}")
        return intact and cleared

    # -- the end ------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        found = self.json("verify", "--full", *self.where)
        clean = not (found["mismatches"] or found["manifest_problems"] or found["damage"])
        final = self.run()
        skipped = final["skipped_fraction"] == 1.0 and not any(
            c["run"] for c in final["counts"].values()
        )
        same = self.exports_reference(final["job_id"])
        running = [j["job_id"] for j in self.json("status", *self.where)["jobs"] if
                   j["status"] == "RUNNING"]  # fmt: skip
        return {
            "verify --full clean": clean,
            "final run all skipped": skipped,
            "final export equals the clean export": same,
            "no job left RUNNING": not running,
        }


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_bytes()))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """A folder export's parts by name, and its marker less the job's own fields."""
    out = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    marker = json.loads(out.pop("_winnow_export.json"))
    out["_winnow_export.json"] = json.dumps(
        {k: v for k, v in marker.items() if k not in ("job_id", "manifest", "exported_at")},
        sort_keys=True,
    ).encode()
    return out


def referenced(state: Path) -> set[Path]:
    """Every artifact a committed checkpoint names."""
    return {Path(t.uri) for t in battery.artifact_targets(state)}


def temporaries(to: Path) -> list[Path]:
    return [p for p in to.parent.iterdir() if p.name.startswith(f".{to.name}{EXPORT_TMP}")]


def plan(rng: Random) -> tuple[list[tuple[str, str]], list[str]]:
    """The seeded order of the damage rounds and of the kills."""
    segment_modes = ["insert", "overwrite", rng.choice(["insert", "overwrite"])]
    rng.shuffle(segment_modes)
    others = ["job record", "journal torn line", "journal garbage line"]
    rng.shuffle(others)
    if others.index("journal garbage line") < others.index("journal torn line"):
        others.reverse()  # a torn line is found by `inspect job`, which garbage stops
    kills = ["driver", "worker", "export file", "export folder", "gc"] * 2
    rng.shuffle(kills)
    return list(zip(segment_modes, others, strict=True)), kills


@pytest.mark.slow
def test_the_trust_contract_holds_through_a_seeded_campaign_of_damage_and_kills(
    tmp_path: Path, demo_inputs: list[str]
):
    began = time.monotonic()
    c = Campaign(tmp_path, demo_inputs)
    rounds, kills = plan(Random(f"{battery.SEED}-plan"))
    c.start()
    for segment_mode, other in rounds:
        c.damage_round(segment_mode, other)
    c.mend_journal()
    counter: dict[str, int] = {}
    for kind in kills:
        n = counter[kind] = counter.get(kind, 0) + 1
        if kind == "driver":
            held = c.kill_driver(n)
        elif kind == "worker":
            held = c.kill_worker(n)
        elif kind == "gc":
            held = c.kill_gc(n)
        else:
            job = battery.newest_job(c.state)
            to = (
                c.exports / "file" / "out.parquet"
                if kind == "export file"
                else c.exports / "folder" / "out"
            )
            held = c.kill_export(n, to, job)
        c.tally.attempt(f"kill {kind}", held)
    end = c.finish()

    report = {**c.tally.as_dict(), "end": end, "notes": c.notes, "moments": c.details}
    report["seconds"] = round(time.monotonic() - began, 1)
    (tmp_path / "battery.json").write_text(json.dumps(report, indent=2))
    table = c.tally.table()
    print(f"\n{table}\n{json.dumps(end)}\n{tmp_path / 'battery.json'}")
    detail = f"{table}\nnotes: {c.notes}"
    assert report["corruptions"]["detected"] == report["corruptions"]["tried"] >= 15, detail
    assert report["kills"]["survived"] == report["kills"]["tried"] == len(kills), detail
    assert all(c.tally.held[k] == c.tally.tried[k] for k in c.tally.tried), detail
    assert report["rows_unaccounted"] == 0, detail
    assert all(end.values()), f"{end}\n{detail}"
    assert not c.notes, detail


@pytest.mark.parametrize("line", [b"[1, 2, 3]", b"42"])
def test_a_journal_line_that_is_json_but_no_event_ends_clearly(tmp_path: Path, line: bytes):
    state = tmp_path / "state"
    (state / "jobs").mkdir(parents=True)
    (state / "events").mkdir()
    (state / "VERSION").write_text("state/v1\n")
    job = {"job_id": "j1", "pipeline": "p", "status": "SUCCEEDED", "created_at": "2026-01-01"}
    (state / "jobs" / "j1.json").write_text(json.dumps(job))
    day = state / "events" / "2026-01-01.jsonl"
    started = {"ts": "2026-01-01T00:00:00", "type": "job_started", "job_id": "j1"}
    day.write_bytes(json.dumps(started).encode() + b"\n" + line + b"\n")
    for args in (["inspect", "job", "--id", "j1"], ["gateway", "snapshot"]):
        done = run_cli(*args, "--state", str(state))
        assert "Traceback" not in done.stderr, done.stderr
        message = " ".join(done.stderr.split())
        assert done.returncode == 0 or (
            done.returncode == 2 and str(day) in message and "line 2" in message
        ), done.stderr
