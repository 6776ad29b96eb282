"""A real multi-node Ray cluster on loopback (cluster/loopback.py): a head and
two worker nodes, each its own raylet, token authentication on.

Submits through the Jobs API and compares with a local run byte for byte,
attaches a foreground run, honours GPU requests against a fake GPU count,
scrapes Ray's Prometheus export for Winnow's metrics, and kills a worker node
mid-run (last: the cluster is smaller afterwards).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import processes
from tests.conftest import ROOT, one_json, run_cli
from winnow import api

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BASE_PORT = 6480
DASHBOARD_PORT = 8276
CLIENT_PORT = 10012


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("loopback")
    script = [sys.executable, str(ROOT / "cluster" / "loopback.py")]
    where = [
        "--dir",
        str(root),
        "--port",
        str(BASE_PORT),
        "--dashboard-port",
        str(DASHBOARD_PORT),
        "--client-port",
        str(CLIENT_PORT),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    up = subprocess.run(
        [*script, "up", *where, "--gpus", "1"], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stdout + up.stderr
    info = json.loads((root / "cluster.json").read_text())
    info["env"] = {
        **env,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": info["auth_token_path"],
    }
    info["token"] = Path(info["auth_token_path"]).read_text().strip()
    try:
        yield info
    finally:
        down = subprocess.run([*script, "down", *where], capture_output=True, text=True)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not loopback._pids(info), "loopback processes left behind"


def _load_loopback() -> Any:
    spec = importlib.util.spec_from_file_location("loopback", ROOT / "cluster" / "loopback.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loopback = _load_loopback()


def _client_server_logs(info: dict[str, Any]) -> str:
    """This cluster's Ray Client server logs, for a failed attach's report."""
    logs = sorted(Path(info["temp_dir"], "head").glob("session_latest/logs/ray_client_server*"))
    return "".join(f"\n--- {p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs)


def _get(url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if body.lstrip().startswith("{") else body


def _digests(record: dict[str, Any]) -> list[str]:
    manifest = api.read_manifest(record["manifest"])
    return [entry["artifact"]["digest"] for entry in manifest["batches"]]


def _nodes(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data = _get(info["dashboard_url"] + "/nodes?view=summary", info["token"])
    return {
        n["raylet"]["nodeId"]: n["raylet"]
        for n in data["data"]["summary"]
        if n["raylet"]["state"] == "ALIVE"
    }


def _local(tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = run_cli(
        "run",
        *args,
        "--state",
        str(tmp_path / "local-state"),
        "--output",
        str(tmp_path / "local-out"),
        "--json",
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return one_json(proc.stdout)


SETS = ["--set", "batch_rows=500"]


def test_submit_runs_on_several_nodes_and_matches_a_local_run(
    cluster: dict[str, Any], demo_inputs: list[str], tmp_path: Path
) -> None:
    inputs = [a for path in demo_inputs for a in ("--input", path)]
    local = _local(
        tmp_path, "demo", "--profile", "high-throughput", *SETS, "--set", "ray_num_cpus=4", *inputs
    )
    state = tmp_path / "cluster-state"
    proc = run_cli(
        "submit", "demo", "--profile", "high-throughput", *SETS, *inputs,
        "--address", cluster["dashboard_url"], "--state", str(state),
        "--output", str(tmp_path / "cluster-out"), "--wait", "--json",
        env=cluster["env"], timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = one_json(proc.stdout)
    assert out["status"] == "SUCCEEDED" and out["ray_status"] == "SUCCEEDED"
    job_id = out["job_id"]
    assert cluster["token"] not in proc.stdout + proc.stderr

    st = api.open_state(str(state))
    record = st.read_job(job_id)
    assert record["ray"]["submission_id"] == out["ray_submission_id"]
    assert _digests(record) == _digests(local), "cluster output differs from the local run"
    assert record["rows_out"] == local["rows_out"]
    for path in state.rglob("*"):
        if path.is_file():
            assert cluster["token"] not in path.read_text(errors="replace"), path

    # Actors of one stage ran on more than one node; named winnow:<job>:<stage>:<i>.
    store = st.checkpoints()
    nodes_by_stage = {
        stage: {r.get("node_id") for r in store.load(stage).records.values()}
        for stage in store.stages()
    }
    assert max(len(n) for n in nodes_by_stage.values()) >= 2, nodes_by_stage
    actors = _get(cluster["dashboard_url"] + "/api/v0/actors?limit=1000", cluster["token"])
    names = {a.get("name") for a in actors["data"]["result"]["result"]}
    assert f"winnow:{job_id}:quality:0" in names

    # The job's metadata in the dashboard, and Ray's status in `winnow inspect job`.
    job = _get(f"{cluster['dashboard_url']}/api/jobs/{out['ray_submission_id']}", cluster["token"])
    assert job["metadata"]["winnow_job_id"] == job_id
    assert job["metadata"]["pipeline"] == "demo"
    assert job["metadata"]["profile"] == "high-throughput"
    shown = run_cli("inspect", "job", "--id", job_id, "--state", str(state), env=cluster["env"])
    assert out["ray_submission_id"] in shown.stdout, shown.stdout + shown.stderr


def test_submit_without_the_token_is_refused_clearly(
    cluster: dict[str, Any], demo_inputs: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    proc = run_cli(
        "submit", "demo", "--input", demo_inputs[0], "--address", cluster["dashboard_url"],
        "--state", str(tmp_path / "state"), env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "token" in proc.stderr and "--token-file" in proc.stderr, proc.stderr
    assert not (tmp_path / "state" / "jobs").exists() or not list(
        (tmp_path / "state" / "jobs").iterdir()
    )
    ok = run_cli(
        "submit", "demo", "--input", demo_inputs[0], "--address", cluster["dashboard_url"],
        "--state", str(tmp_path / "state"), "--output", str(tmp_path / "out"),
        "--token-file", cluster["auth_token_path"], "--wait", "--json", env=env, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert cluster["token"] not in ok.stdout + ok.stderr


def test_attached_run_honours_gpu_requests_on_the_fake_gpu_node(
    cluster: dict[str, Any], demo_inputs: list[str], tmp_path: Path
) -> None:
    gpu_nodes = {nid for nid, n in _nodes(cluster).items() if n["resourcesTotal"].get("GPU")}
    assert len(gpu_nodes) == 1
    # `plan` sizes the pools against the cluster before anything runs.
    plan = run_cli(
        "plan", "demo", "--profile", "gpu-single", "--input", demo_inputs[0],
        "--address", cluster["gcs_address"], "--state", str(tmp_path / "state"), "--json",
        env=cluster["env"],
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    capacity = json.loads(plan.stdout)["capacity"]
    assert capacity["cluster"]["nodes"] == 3 and capacity["cluster"]["GPU"] == 1
    assert capacity["actors"]["embed"] == 1 and not capacity["problems"]
    too_big = run_cli(
        "plan", "demo", "--profile", "gpu-single", "--set", "embed.num_gpus=2",
        "--input", demo_inputs[0], "--address", cluster["gcs_address"],
        "--state", str(tmp_path / "state"), env=cluster["env"],
    )  # fmt: skip
    assert "cannot run: stage 'embed' asks for 2 GPU" in " ".join(too_big.stderr.split())
    proc = run_cli(
        "run", "demo", "--profile", "gpu-single", "--set", "batch_rows=1000",
        "--input", demo_inputs[0], "--address", cluster["gcs_address"],
        "--state", str(tmp_path / "state"), "--output", str(tmp_path / "out"), "--json",
        env=cluster["env"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    store = api.open_state(str(tmp_path / "state")).checkpoints()
    embed_nodes = {r["node_id"] for r in store.load("embed").records.values()}
    assert embed_nodes == gpu_nodes  # num_gpus=1 only fits where the GPU is
    # The fake GPU has no NVML behind it: said once per actor process, not an error.
    assert proc.stderr.count("GPU telemetry off") == 1, proc.stderr[-3000:]
    # A run attached with --address says where the cluster's dashboard is.
    assert f"Ray dashboard: {cluster['dashboard_url']}" in proc.stderr, proc.stderr[-3000:]


def test_run_attaches_through_ray_client(
    cluster: dict[str, Any], demo_inputs: list[str], tmp_path: Path
) -> None:
    proc = run_cli(
        "run", "demo", "--profile", "local-cpu", "--input", demo_inputs[1],
        "--address", cluster["client_address"], "--state", str(tmp_path / "state"),
        "--output", str(tmp_path / "out"), "--json", env=cluster["env"],
    )  # fmt: skip
    assert proc.returncode == 0, (
        proc.stdout[-2000:] + proc.stderr[-3000:] + _client_server_logs(cluster)
    )
    assert one_json(proc.stdout)["status"] == "SUCCEEDED"


def test_grouping_and_global_stages_run_across_nodes_as_locally(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """Shards a map side committed on one node are reduced on another: same bytes."""
    from tests.e2e.test_exact_dedup import write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    pipeline = str(ROOT / "tests" / "pipelines" / "dedup_global.py")
    _on_cluster_and_locally(cluster, tmp_path, pipeline, corpus, 250)
    store = api.open_state(str(tmp_path / "cluster-state")).checkpoints()
    nodes = {r.get("node_id") for s in store.stages() for r in store.load(s).records.values()}
    assert len(nodes) >= 2, nodes


def test_fuzzy_dedup_with_its_rejoin_runs_across_nodes_as_locally(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """Band buckets, components and the input read again by ``keep``: same bytes."""
    from tests.e2e.test_fuzzy_dedup import write_corpus

    corpus, _ = write_corpus(tmp_path / "corpus")
    pipeline = str(ROOT / "pipelines" / "fuzzy_dedup.py")
    record, local = _on_cluster_and_locally(cluster, tmp_path, pipeline, corpus, 500)
    assert record["counts"]["keep"]["run"] == 6
    assert record["accounting"]["total"] == local["accounting"]["total"]


def _on_cluster_and_locally(
    cluster: dict[str, Any], tmp_path: Path, pipeline: str, corpus: list[str], batch_rows: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``pipeline`` on the cluster and with the local executor: (cluster job, local job).

    Both succeed and write the same output artifacts.
    """
    args = [pipeline, "--profile", "high-throughput", "--set", f"batch_rows={batch_rows}"]
    args += [a for path in corpus for a in ("--input", path)]
    local = _local(tmp_path, *args, "--executor", "local")
    state = tmp_path / "cluster-state"
    proc = run_cli(
        "run", *args, "--address", cluster["gcs_address"], "--state", str(state),
        "--output", str(tmp_path / "cluster-out"), "--json", env=cluster["env"], timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = api.open_state(str(state)).read_job(one_json(proc.stdout)["job_id"])
    assert record["status"] == "SUCCEEDED"
    assert _digests(record) == _digests(local), "cluster output differs from the local run"
    return record, local


def test_every_port_of_the_cluster_is_on_loopback(cluster: dict[str, Any]) -> None:
    """Ray's ports run code for whoever reaches them: none may listen beyond
    127.0.0.1 (Ray would otherwise bind the machine's routable address)."""
    import psutil

    pids = set(loopback._pids(cluster))
    listening = [
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    ports = {port for _, port, _ in listening}
    assert BASE_PORT in ports and DASHBOARD_PORT in ports and CLIENT_PORT in ports, listening
    exposed = [entry for entry in listening if entry[0] not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not exposed, exposed


def test_prometheus_export_has_winnow_metrics(cluster: dict[str, Any]) -> None:
    """After the runs above, every metric family shows up with non-zero values."""
    wanted = {
        "ray_winnow_batches_total",
        "ray_winnow_rows_in_total",
        "ray_winnow_rows_out_total",
        "ray_winnow_bytes_in_total",
        "ray_winnow_bytes_out_total",
        "ray_winnow_stage_latency_seconds_count",
        "ray_winnow_quarantined_records_total",
    }
    found: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(found) != wanted:
        for node in cluster["nodes"]:
            text = _get(f"http://127.0.0.1:{node['metrics-export-port']}/metrics", None)
            for line in text.splitlines():
                name = line.split("{", 1)[0]
                if name in wanted:
                    found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        if set(found) != wanted:
            time.sleep(2)
    assert set(found) == wanted, f"missing {wanted - set(found)}"
    assert all(v > 0 for v in found.values()), found
    assert 'status="SUCCEEDED"' in text or any(
        'status="SUCCEEDED"' in _get(f"http://127.0.0.1:{n['metrics-export-port']}/metrics", None)
        for n in cluster["nodes"]
    )


def _wait_for(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_gateway_submits_queued_jobs_and_reconciles_a_lost_driver(
    cluster: dict[str, Any], demo_inputs: list[str], tmp_path: Path
) -> None:
    """`submit --queue` leaves a PENDING job; the gateway submits it to the
    cluster. A second job's driver is SIGKILLed: Ray ends the job and the
    gateway marks its record FAILED (RayJobEnded) instead of leaving it RUNNING."""
    from tests.conftest import free_port

    env = cluster["env"]
    state = str(tmp_path / "state")
    port = free_port()
    run_dir = ["--run-dir", str(tmp_path / "run")]
    started = run_cli(
        "gateway", "start", "--state", state, *run_dir, "--port", str(port), "--poll", "0.2",
        env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    paced = str(ROOT / "tests" / "pipelines" / "paced.py")
    try:

        def queue(*extra: str) -> str:
            proc = run_cli(
                "submit", paced, "--queue", "--address", cluster["dashboard_url"],
                "--state", state, "--output", str(tmp_path / "out"), "--set", "batch_rows=300",
                "--input", demo_inputs[0], *extra, "--json", env=env,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stdout + proc.stderr
            record = json.loads(proc.stdout)
            assert record["status"] == "PENDING"
            return str(record["job_id"])

        st = api.open_state(state)
        first = queue()
        done = _wait_for(
            lambda: st.read_job(first).get("status") in ("SUCCEEDED", "FAILED") and st.read_job(first),
            300, "the queued job to finish on the cluster",
        )  # fmt: skip
        assert done["status"] == "SUCCEEDED", done.get("error")
        assert done["ray"]["submission_id"] == f"winnow-{first}"
        assert done["request"]["submit_to"] == cluster["dashboard_url"]

        second = queue("--set", "pace.delay_s=1.0")
        _wait_for(lambda: st.read_job(second).get("status") == "RUNNING", 180, "the driver")
        driver = _wait_for(
            lambda: subprocess.run(
                ["pgrep", "-f", f"job-id {second}"], capture_output=True, text=True
            ).stdout.split(),
            30, "the driver process",
        )  # fmt: skip
        for pid in driver:
            os.kill(int(pid), signal.SIGKILL)
        lost = _wait_for(
            lambda: st.read_job(second).get("status") == "FAILED" and st.read_job(second),
            120, "the gateway to reconcile the lost driver",
        )  # fmt: skip
        assert lost["error"]["type"] == "RayJobEnded", lost["error"]
        metrics = _get(f"http://127.0.0.1:{port}/metrics", None)
        assert "winnow_gateway_jobs_submitted_total 2.0" in metrics
    finally:
        stopped = run_cli("gateway", "stop", *run_dir, env=env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_killing_a_worker_node_mid_run_loses_nothing(
    cluster: dict[str, Any], demo_inputs: list[str], tmp_path: Path
) -> None:
    """SIGKILL worker 1's raylet while a submitted job runs: the job finishes,
    output identical to a clean local run, each batch exactly once."""
    paced = str(ROOT / "tests" / "pipelines" / "paced.py")
    sets = ["--set", "batch_rows=300", "--set", "pace.delay_s=0.4", "--set", "pace.max_actors=3",
            "--set", "upper.max_actors=3"]  # fmt: skip
    inputs = [a for path in demo_inputs for a in ("--input", path)]
    local = _local(tmp_path, paced, *sets, *inputs)
    state = tmp_path / "cluster-state"
    segments = state / "stages" / "pace" / "segments"
    submit = processes.start_until(
        ["submit", paced, *sets, *inputs,
         "--address", cluster["dashboard_url"], "--state", str(state),
         "--output", str(tmp_path / "cluster-out"), "--wait", "--json"],
        processes.has_files(segments), timeout=240, step=0.5,
        base_env=cluster["env"], pipe=True, session=False,
    )  # fmt: skip
    assert segments.exists(), "the job never committed a batch"
    worker1 = next(n for n in cluster["nodes"] if n["name"] == "worker1")
    raylet = subprocess.run(
        ["pgrep", "-f", f"raylet.*--node_manager_port={worker1['node-manager-port']}"],
        capture_output=True, text=True,
    )  # fmt: skip
    pids = [int(p) for p in raylet.stdout.split()]
    assert len(pids) == 1, raylet.stdout
    os.kill(pids[0], signal.SIGKILL)
    stdout, stderr = submit.communicate(timeout=480)
    assert submit.returncode == 0, stdout[-3000:] + stderr[-3000:]
    out = one_json(stdout)
    record = api.open_state(str(state)).read_job(out["job_id"])
    assert record["status"] == "SUCCEEDED"
    digests = _digests(record)
    assert digests == _digests(local)
    assert record["rows_out"] == local["rows_out"]
    assert record["batches"] == local["batches"]
