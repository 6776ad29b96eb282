"""`winnow run --dashboard`: the embedded Ray's dashboard answers on 127.0.0.1 while the run runs."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import PACED

pytestmark = pytest.mark.slow


def test_a_dashboard_run_prints_a_loopback_url_that_answers(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(60)))
    log = tmp_path / "run"
    where = ["--state", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    args = ["run", PACED, "--profile", "local-cpu", "--input", str(source), *where]
    args += ["--set", "batch_rows=10", "--set", "pace.delay_s=1.0", "--dashboard"]

    def url() -> str | None:
        found = re.search(r"Ray dashboard: (http://\S+)", Path(f"{log}.err").read_text())
        return found.group(1) if found else None

    proc = processes.start_until(args, lambda: url() is not None, timeout=120, log=log)
    try:
        address = url()
        assert address is not None and address.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(address, timeout=30) as response:
            assert response.status == 200
        assert proc.wait(timeout=180) == 0, Path(f"{log}.err").read_text()
    finally:
        processes.kill_group(proc)


def test_dashboard_with_the_local_executor_is_refused(tmp_path: Path) -> None:
    proc = processes.start(
        ["run", "demo", "--executor", "local", "--dashboard", "--state", str(tmp_path / "s")],
        pipe=True,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--dashboard watches Ray" in err
