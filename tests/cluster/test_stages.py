"""The stages on two nodes: `rdistill finetune --workers 2`, `rdistill sample` and `rdistill evaluate` run with
their work forced onto node 2 (custom resource n2), storage on S3 and tracking on the MLflow server; their
results are read back from S3 and the MLflow server only. Node 2's worker process is killed once mid-fine-tune
and once mid-sample: each run finishes with the same result as the undisturbed one."""

import csv
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rdistill import storage
from rdistill.cli import main

pytestmark = pytest.mark.cluster

BASE = Path(__file__).resolve().parents[2] / "experiments" / "bases" / "digits-dit-tiny"
FINETUNE = ["--dataset", "digits", "--workers", "2", "--cpus-per-worker", "0.45", "--worker-resources", "n2=0.5",
            "--max-steps", "12", "--batch-size", "8", "--no-progress", "train.ckpt_every=4", "train.log_every=4"]
SAMPLE = ["--ipc", "2", "--chunk-size", "1", "--steps", "5", "--workers", "1", "--worker-resources", "n2=1",
          "--no-progress"]


def succeeds_in(what: str, args: list) -> None:
    """`rdistill ARGS` exits 0; its wall time is printed (the numbers of the closing notes)."""
    t0 = time.monotonic()
    assert main(args) == 0
    print(f"\n{what}: {time.monotonic() - t0:.1f} s")


def kill_when(ready, title: str, scratch: str, killed: list, timeout: float = 120.0) -> threading.Thread:
    """In the background: once ready() holds, SIGKILL node 2's worker process whose title has `title` (found by
    its node's own scratch folder in its environment, killed by its pid); record the pid in `killed`."""

    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            pid = ready() and node_process(title, scratch)
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def node_process(title: str, scratch: str) -> int | None:
    """The pid of a process whose title holds `title` and whose environment names this node's scratch (Linux)."""
    needle = f"RDISTILL_SCRATCH={scratch}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and title.encode() in (proc / "cmdline").read_bytes() \
                    and needle in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    return None


@pytest.fixture(scope="module")
def stored_base(cluster, s3):
    from servers import s3_uri

    location = s3_uri(s3, "rdistill", "bases/digits-dit-tiny")
    storage.upload_dir(BASE, location)
    return location


@pytest.fixture(scope="module")
def finetuned(cluster, s3, stored_base):
    """The undisturbed run: 2 Train workers on node 2, stored on S3."""
    from servers import s3_uri

    out = s3_uri(s3, "rdistill", "runs/undisturbed")
    succeeds_in("finetune --workers 2 on node 2",
                ["finetune", "--init", stored_base, "--out", out, "--address", cluster[0].address, *FINETUNE])
    return out


def final_files(location: str) -> dict:
    """The bytes of every file of the newest published checkpoint, read from S3."""
    files = storage.list_files(location)
    step = sorted({f.split("/")[1] for f in files if f.startswith("checkpoints/step-")})[-1]
    names = [f for f in files if f.startswith(f"checkpoints/{step}/")]
    return {n.split("/")[-1]: storage.read_bytes(storage.join(location, n)) for n in names}


def test_finetune_on_two_workers_publishes_a_run_with_every_ranks_memories(finetuned):
    assert storage.is_complete(finetuned)
    files = final_files(finetuned)
    assert sorted(files) == ["ema.safetensors", "memory-rank1.safetensors", "memory.safetensors", "optimizer.pt",
                             "state.json", "trainable.safetensors"]
    assert json.loads(files["state.json"])["step"] == 12
    assert files["memory.safetensors"] != files["memory-rank1.safetensors"]  # each rank remembers its own slice
    losses = list(csv.DictReader(io.StringIO(storage.read_text(storage.join(finetuned, "losses.csv")))))
    assert [int(r["step"]) for r in losses] == [4, 8, 12]


def test_a_finetune_whose_node_2_worker_dies_ends_as_the_undisturbed_one(cluster, s3, stored_base, finetuned):
    from servers import s3_uri

    out = s3_uri(s3, "rdistill", "runs/killed")
    killed = []
    has_checkpoint = lambda: any("checkpoint_" in f and f.endswith("state.json")  # noqa: E731
                                 for f in storage.list_files(storage.join(out, "ray")))
    watcher = kill_when(has_checkpoint, "RayTrainWorker", str(cluster[1]["n2"] / "scratch"), killed)
    succeeds_in("finetune with a killed worker",
                ["finetune", "--init", stored_base, "--out", out, "--address", cluster[0].address, *FINETUNE])
    watcher.join(1)
    assert killed, "no Train worker on node 2 was killed"
    assert final_files(out) == final_files(finetuned)  # weights, optimizer and both ranks' memories


def test_a_stored_run_of_another_config_is_refused(cluster, stored_base, finetuned, capsys):
    args = ["finetune", "--init", stored_base, "--out", finetuned, *FINETUNE[:-2], "train.ckpt_every=4",
            "train.lambda_r=0.5"]
    assert main(args) == 2
    assert "holds a run with another config" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sampled(cluster, s3, finetuned):
    from servers import s3_uri

    out = s3_uri(s3, "rdistill", "sets/undisturbed")
    succeeds_in("sample on node 2", ["sample", "--run", finetuned, "--out", out, "--address", cluster[0].address, *SAMPLE])
    return out


def test_sampling_on_node_2_publishes_a_set_to_s3(sampled):
    from rdistill.data.shards import Manifest, read_surrogate

    m = Manifest.load(sampled)
    assert len(m.shards) == 20 and sum(m.counts.values()) == 20
    x, y = read_surrogate(sampled).tensors()
    assert x.shape == (20, 1, 8, 8) and y.tolist() == [k for k in range(10) for _ in range(2)]


def test_a_sample_whose_node_2_worker_dies_ends_as_the_undisturbed_one(cluster, s3, finetuned, sampled):
    from rdistill.data.shards import Manifest
    from servers import s3_uri

    out = s3_uri(s3, "rdistill", "sets/killed")
    killed = []
    some_shard = lambda: any(f.endswith(".parquet") for f in storage.list_files(out))  # noqa: E731
    watcher = kill_when(some_shard, "_with_threads", str(cluster[1]["n2"] / "scratch"), killed)
    assert main(["sample", "--run", finetuned, "--out", out, "--address", cluster[0].address, *SAMPLE]) == 0
    watcher.join(1)
    assert killed, "no sampling task on node 2 was killed"
    assert Manifest.load(out).shards == Manifest.load(sampled).shards  # same shards, byte for byte (sha256)


def test_evaluate_on_node_2_writes_the_matrix_to_s3_and_the_mlflow_server(cluster, s3, mlflow_url, sampled,
                                                                         capsys):
    from mlflow import MlflowClient
    from servers import s3_uri

    out = s3_uri(s3, "rdistill", "evaluate")
    succeeds_in("evaluate on node 2",
                ["evaluate", "--surrogate", sampled, "--dataset", "digits", "--seeds", "1", "--epochs", "2",
                 "--workers", "1", "--worker-resources", "n2=1", "--address", cluster[0].address, "--out", out,
                 "--tracking-uri", mlflow_url, "--experiment", "cluster-evaluate", "--no-progress"])
    capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(storage.read_text(storage.join(out, "matrix.csv")))))
    assert len(rows) == 1 and rows[0]["method"] == "minimax"
    client = MlflowClient(tracking_uri=mlflow_url)
    exp = client.get_experiment_by_name("cluster-evaluate")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and len(runs) == 2  # the matrix and its one cell
    assert any(k.startswith("acc/") and k.endswith("final_mean") for k in parent[0].data.metrics)


def test_a_relative_out_under_a_ray_job_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a job's driver
    assert main(["select", "--dataset", "digits", "--method", "random", "--ipc", "1", "--out", "sets/x"]) == 2
    assert "relative path under `ray job submit`" in capsys.readouterr().err
