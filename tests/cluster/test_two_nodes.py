"""Work forced onto node 2 hands its results over through the S3 store and the MLflow server only."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import ray

from rdistill import storage
from rdistill.distributed.cluster import wait_for_resources

ON_N2 = {"num_cpus": 1, "resources": {"n2": 1}}

pytestmark = pytest.mark.cluster


def node_id_with(resource: str) -> str:
    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"])


@ray.remote
def publish_a_run_folder(location: str) -> dict:
    """On node 2: write a run folder in the node's own scratch, publish it to storage, report where it ran."""
    scratch = Path(os.environ["RDISTILL_SCRATCH"]) / "run"
    (scratch / "ckpt").mkdir(parents=True, exist_ok=True)
    (scratch / "ckpt" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (scratch / "config.yaml").write_text("model: dit-tiny\n")
    storage.upload_dir(scratch, storage.join(location, "run"))
    node = ray.get_runtime_context().get_node_id()
    storage.write_text(storage.join(location, "node.txt"), node)
    return {"node": node, "home": os.environ["HOME"], "tmp": tempfile.gettempdir(), "scratch": str(scratch)}


@ray.remote
def remove_scratch(folder: str) -> bool:
    shutil.rmtree(folder)
    return not os.path.exists(folder)


def test_a_task_on_node_2_writes_to_s3_and_the_driver_reads_it_from_s3(cluster, s3_prefix, tmp_path):
    c, folders = cluster
    info = ray.get(publish_a_run_folder.options(**ON_N2).remote(s3_prefix))
    assert info["node"] == node_id_with("n2") != ray.get_runtime_context().get_node_id()
    n2 = str(folders["n2"])
    assert info["home"].startswith(n2) and info["tmp"].startswith(n2) and info["scratch"].startswith(n2)
    assert ray.get(remove_scratch.options(**ON_N2).remote(info["scratch"]))  # node 2's disk no longer has it

    assert storage.read_text(storage.join(s3_prefix, "node.txt")) == info["node"]
    assert storage.is_complete(storage.join(s3_prefix, "run"))
    got = storage.download_dir(storage.join(s3_prefix, "run"), tmp_path / "driver-scratch")
    assert got == ["ckpt/weights.bin", "config.yaml"]
    assert (tmp_path / "driver-scratch" / "ckpt" / "weights.bin").read_bytes() == bytes(range(256)) * 40


@ray.remote
def log_a_run(artifact_text: str) -> str:
    """On node 2: log a run with rdistill.tracking, no tracking URI given (the node's MLFLOW_TRACKING_URI)."""
    from rdistill.tracking import log_run

    note = Path(os.environ["RDISTILL_SCRATCH"]) / "note.txt"
    note.write_text(artifact_text)
    return log_run({"train": {"lr": 0.001}}, {0: {"loss": 2.0}, 3: {"loss": 1.0}}, [note], "cluster",
                   name="from-node-2", tags={"node": ray.get_runtime_context().get_node_id()})


def test_a_task_on_node_2_logs_to_the_mlflow_server_by_http(cluster, mlflow_url, tmp_path):
    from mlflow import MlflowClient

    run_id = ray.get(log_a_run.options(**ON_N2).remote("logged on node 2"))
    client = MlflowClient(tracking_uri=mlflow_url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "from-node-2"
    assert run.data.params == {"train.lr": "0.001"} and run.data.tags["node"] == node_id_with("n2")
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(0, 2.0), (3, 1.0)]
    path = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert Path(path).read_text() == "logged on node 2"


def test_a_request_the_cluster_can_hold_returns_at_once(cluster):
    wait_for_resources({"CPU": 1, "n2": 1}, timeout=5, poll=0.2)


def test_a_gpu_request_on_a_cluster_without_gpu_nodes_fails_after_a_bounded_wait(cluster):
    assert ray.cluster_resources().get("GPU", 0) == 0
    with pytest.raises(ValueError, match=r"asks \{'GPU': 1.0, 'CPU': 1.0\} after waiting 2 s.*gpu_worker"):
        wait_for_resources({"GPU": 1, "CPU": 1}, timeout=2, poll=0.5)
