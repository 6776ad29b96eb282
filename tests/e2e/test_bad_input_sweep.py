"""The bad-input sweep (issue 22): every kind of broken input ends clearly, never silently.

Each kind is a small file (or a FIFO, a folder, a dangling link) fed to the demo
pipeline through the real CLI. Handled cleanly means one of two things: accepted
(exit 0) with every good row out, the bad rows quarantined (file, row, reason) and the
file's rows all accounted for (``unaccounted`` 0); or exit 2 with one
paragraph naming the file, no traceback and nothing written to the state. Never
a traceback, a hang, or rows that vanish.

Kinds that ``plan`` accepts run together in one ``winnow run`` (their rows are
told apart by id range and by the per-file accounting); kinds it refuses run
``winnow run`` one by one, which exits before Ray starts.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.e2e.bad_inputs import KINDS, SPAN, Kind


def where(tmp: Path, label: str) -> list[str]:
    return ["--state", str(tmp / label / "state"), "--output", str(tmp / label / "out")]


def command(verb: str, paths: list[Path], tmp: Path, label: str) -> list[str]:
    inputs = [a for p in paths for a in ("--input", str(p))]
    return [verb, "demo", "--profile", "local-cpu", *inputs, *where(tmp, label), "--json"]


def cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    """The command's result, or None when it ran past ``timeout`` (a hang)."""
    try:
        return run_cli(*args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def flat(text: str) -> str:
    return "".join(text.split())  # a long path may be wrapped


def judge_alone(k: Kind, tmp: Path, label: str) -> None:
    """Run ``k`` by itself: it must be refused cleanly (or, if accepted, be clean too)."""
    assert k.made is not None
    done = cli(command("run", [k.made.path], tmp, label), timeout=180)
    if done is None:
        k.outcome, k.clean = "HANG (run past 180 s)", False
        return
    if "Traceback" in done.stderr:
        k.outcome, k.clean = f"exit {done.returncode} with a TRACEBACK", False
        return
    if done.returncode != 2:
        k.outcome, k.clean = f"exit {done.returncode} (plan refused it, run did not)", False
        return
    message = done.stderr.strip()
    named = flat(str(k.made.path)) in flat(message)
    paragraph = "\n\n" not in message
    untouched = not (tmp / label / "state").exists()
    k.clean = named and paragraph and untouched
    flaws = [w for w, ok in (("file not named", named), ("several paragraphs", paragraph),
                             ("state written", untouched)) if not ok]  # fmt: skip
    short = " ".join(message.removeprefix("error: ").split()).replace(
        str(k.made.path), k.made.path.name
    )
    k.outcome = f"exit 2: {short[:90]}" + (f" [{', '.join(flaws)}]" if flaws else "")


def judge_accepted(k: Kind, record: dict, ids: set[int], quarantined: dict[str, list]) -> None:
    """``k`` ran in the shared run: its rows all accounted for, its good rows out."""
    assert k.made is not None
    made, url = k.made, str(k.made.path)
    acc = record["accounting"]["files"].get(url)
    if acc is None:
        k.clean = made.rows == 0 and not made.good
        k.outcome = "accepted: no rows" if k.clean else "accepted: not in the accounting"
        return
    flaws = []
    if acc["unaccounted"]:
        flaws.append(f"{acc['unaccounted']} rows UNACCOUNTED")
    missing = sorted(set(made.good) - ids)
    if missing:
        flaws.append(f"{len(missing)} good rows missing")
    if acc["quarantined"] < made.bad:
        flaws.append(f"{made.bad - acc['quarantined']} bad rows not quarantined")
    if made.rows is not None and acc["read"] != made.rows:
        flaws.append(f"read {acc['read']} of {made.rows} rows")
    if acc["in_failed_batches"]:
        flaws.append(f"{acc['in_failed_batches']} rows in failed batches")
    records = quarantined.get(url, [])
    if len(records) != acc["quarantined"] or not all(r["row"] >= 1 and r["error"] for r in records):
        flaws.append("quarantine records do not match (file, row, reason)")
    k.clean = not flaws
    k.outcome = (
        f"accepted: {acc['passed']} passed, {acc['filtered']} filtered, "
        f"{acc['quarantined']} quarantined" + (f" [{'; '.join(flaws)}]" if flaws else "")
    )


def shared_run(accepted: list[Kind], tmp: Path) -> None:
    """Run every accepted kind in one ``winnow run``; a kind that run refuses (exit 2)
    is judged alone and the rest run again."""
    for attempt in range(len(accepted) + 1):
        label = f"shared-{attempt}"
        done = cli(command("run", [k.made.path for k in accepted if k.made], tmp, label), 600)
        if done is None or "Traceback" in done.stderr or done.returncode not in (0, 1, 2):
            why = "HANG" if done is None else f"exit {done.returncode}"
            for k in accepted:
                k.outcome, k.clean = f"{why} in the shared run (judged together)", False
            return
        if done.returncode != 2:
            judge_shared(accepted, json.loads(done.stdout), tmp, label)
            return
        out = [k for k in accepted if flat(str(k.made.path)) in flat(done.stderr)]
        assert out, done.stderr
        for k in out:
            judge_alone(k, tmp, f"alone-{KINDS.index(k)}")
        accepted = [k for k in accepted if k not in out]


def judge_shared(accepted: list[Kind], record: dict, tmp: Path, label: str) -> None:
    """Judge each kind of a shared run (exit 0, or 1 when some batch failed) by its file's
    accounting, its good rows in the export and its quarantine records."""
    target = tmp / label / "export.parquet"
    state = where(tmp, label)[:2]
    exported = run_cli("export", record["job_id"], "--to", str(target), *state)
    assert exported.returncode == 0, exported.stderr
    ids = set(pq.read_table(target, columns=["id"]).column("id").to_pylist())
    shown = run_cli("inspect", "quarantine", "--limit", "1000000", "--json", *state)
    assert shown.returncode == 0, shown.stderr
    by_file: dict[str, list] = {}
    for r in json.loads(shown.stdout)["records"]:
        by_file.setdefault(r["file"], []).append(r)
    failed = {b["source"]["file"]: b for b in record.get("poison_batches") or []}
    for k in accepted:
        judge_accepted(k, record, ids, by_file)
        batch = failed.get(str(k.made.path))
        if batch is not None:  # the job ended FAILED (exit 1) for this kind's batch
            k.clean = False
            why = f"{batch['error_type']}: {batch['message'][:50]}"
            k.outcome = f"accepted, but its batch failed: job FAILED, exit 1 ({why}); {k.outcome}"


def matches(k: Kind) -> bool:
    if k.expect == "either":
        return True
    if k.expect == "refuse":
        return k.outcome.startswith("exit 2")
    quarantined = k.outcome.startswith("accepted") and " 0 quarantined" not in k.outcome
    return quarantined if k.expect == "quarantine" else k.outcome.startswith("accepted")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> list[Kind]:
    """Every kind, made, run and judged once; the table printed and kept in sweep.json."""
    tmp = tmp_path_factory.mktemp("sweep")
    tried = []
    for number, k in enumerate(KINDS, start=1):
        folder = tmp / "inputs" / f"{number:02d}"
        folder.mkdir(parents=True)
        k.made = k.make(folder, number * SPAN)
        if k.name.startswith("an unreadable file") and os.geteuid() == 0:
            k.outcome = "n/a: root reads a chmod 000 file, so there is nothing to try"
            continue
        tried.append(k)

    def probe(k: Kind) -> subprocess.CompletedProcess[str] | None:
        return cli(command("plan", [k.made.path], tmp, f"plan-{KINDS.index(k)}"), 60)

    with ThreadPoolExecutor(max_workers=2) as pool:
        plans = dict(zip([k.name for k in tried], pool.map(probe, tried), strict=True))
        accepted = [k for k in tried if (p := plans[k.name]) and p.returncode == 0]
        alone = [k for k in tried if k not in accepted]
        list(pool.map(lambda k: judge_alone(k, tmp, f"alone-{KINDS.index(k)}"), alone))
    shared_run(accepted, tmp)

    width = max(len(k.name) for k in KINDS)
    rows = [
        f"{k.name:<{width}}  {k.expect:<10}  "
        f"{'n/a' if k not in tried else 'ok ' if k.clean else 'BAD'}"
        f"{'' if k not in tried or matches(k) else ' (not as expected)'}  {k.outcome}"
        for k in KINDS
    ]
    table = "\n".join([f"{'kind':<{width}}  {'expected':<10}  outcome", *rows])
    print(f"\nbad-input sweep: {len(tried)} kinds tried\n{table}")
    summary = [
        {"kind": k.name, "expected": k.expect, "outcome": k.outcome, "clean": k.clean}
        for k in KINDS
    ]
    (tmp / "sweep.json").write_text(json.dumps(summary, indent=2))
    return tried


@pytest.mark.slow
def test_every_kind_of_bad_input_is_quarantined_or_refused_never_silent(sweep: list[Kind]):
    assert len(sweep) >= 30
    failing = {k.name: k.outcome for k in sweep if not k.clean}
    assert not failing, f"not handled cleanly: {json.dumps(failing, indent=1)}"
