"""experiments/imagenet1k.py --smoke-test through a real `ray start --head` on loopback and `ray job submit
--working-dir .`: SUCCEEDED with shards, matrix and MLflow runs; a job in S3 (moto) tracked by the MLflow
server, stopped halfway and re-submitted, ends with the shards the uninterrupted job wrote to a folder. The
head is started here and stopped by its own pid."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rdistill import storage
from servers import DUMMY_AWS, free_port, s3_uri, start, stop

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_AUTH_MODE": "disabled",
       "MLFLOW_DISABLE_TELEMETRY": "true", **DUMMY_AWS}


def ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node Ray cluster of its own (own ports and temp folder): the dashboard's job-server URL."""
    tmp = tmp_path_factory.mktemp("ray-head")
    short_tmp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # Ray's unix sockets live here: paths <= 107 bytes
    ports = [free_port() for _ in range(7)]
    cmd = [ray_bin(), "start", "--head", "--block", "--port", str(ports[0]), "--node-ip-address", "127.0.0.1",
           "--num-cpus", "2", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(ports[1]), "--dashboard-agent-listen-port", str(ports[2]),
           "--dashboard-agent-grpc-port", str(ports[3]), "--metrics-export-port", str(ports[4]),
           "--runtime-env-agent-port", str(ports[5]), "--ray-client-server-port", str(ports[6]),
           "--temp-dir", short_tmp, "--disable-usage-stats"]
    proc = start(cmd, tmp / "head.log", {**ENV, "RAY_USAGE_STATS_ENABLED": "0"})
    address = f"http://127.0.0.1:{ports[1]}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([ray_bin(), "job", "list", "--address", address], capture_output=True,
                             env={**os.environ, **ENV}).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"ray head not up:\n{(tmp / 'head.log').read_text()[-2000:]}")
            time.sleep(2)
        yield address
    finally:
        stop(proc, grace=60)
        shutil.rmtree(short_tmp, ignore_errors=True)


def job(address: str, *args, wait: bool = True, sid: str | None = None) -> subprocess.CompletedProcess:
    cmd = [ray_bin(), "job", "submit", "--address", address, "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"env_vars": ENV}), *(["--no-wait"] if not wait else []),
           *(["--submission-id", sid] if sid else []), "--", sys.executable, "experiments/imagenet1k.py", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=1200)


def shards(out) -> dict:
    m = json.loads(storage.read_text(storage.join(str(out), "sets", "minimax-ipc2", "_manifest.json")))
    return {name: s["sha256"] for name, s in m["shards"].items()}


def test_submitted_job_succeeds_and_a_stopped_one_resumes_to_the_same_shards(head, tmp_path, s3, mlflow_url):
    from mlflow import MlflowClient

    whole = tmp_path / "whole"
    p = job(head, "--smoke-test", "--out", whole)
    assert p.returncode == 0 and "succeeded" in p.stdout + p.stderr, (p.stdout + p.stderr)[-3000:]
    assert len(shards(whole)) == 6 and (whole / "matrix.md").exists()
    client = MlflowClient(f"sqlite:///{whole / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imagenet1k").experiment_id
    (parent,) = client.search_runs([exp], "tags.job_fingerprint != ''")
    assert parent.data.tags["stage"].startswith("done")

    halted = s3_uri(s3, "rdistill", "imagenet1k/halted")  # in storage, tracked by the MLflow server
    job(head, "--smoke-test", "--out", halted, "--tracking-uri", mlflow_url, wait=False, sid="halted-1")
    env = {**os.environ, **ENV}
    deadline = time.monotonic() + 300
    while "phases of 4 classes" not in subprocess.run([ray_bin(), "job", "logs", "--address", head, "halted-1"],
                                                      capture_output=True, text=True, env=env).stdout:
        assert time.monotonic() < deadline, "the job never reached its phases"
        time.sleep(2)
    subprocess.run([ray_bin(), "job", "stop", "--address", head, "halted-1"], capture_output=True, env=env, check=True)
    assert not storage.exists(storage.join(halted, "sets", "minimax-ipc2", "_manifest.json"))
    p = job(head, "--smoke-test", "--out", halted, "--tracking-uri", mlflow_url)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert "latents: 0 of 6 chunks encoded now" in p.stdout
    assert shards(halted) == shards(whole)
    assert storage.exists(storage.join(halted, "matrix.md")) and storage.is_complete(storage.join(halted, "matrix"))
    runs = MlflowClient(mlflow_url).search_runs([MlflowClient(mlflow_url).get_experiment_by_name("imagenet1k").experiment_id])
    assert any(r.data.tags.get("stage", "").startswith("done") for r in runs)
