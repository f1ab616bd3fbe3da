"""clusters/*.yaml: each file parses, has the keys rdistill relies on, and names scripts that exist."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "clusters").glob("*.yaml"))
AUTOSCALER = [p for p in FILES if "provider" in next(yaml.safe_load_all(p.read_text()))]
KUBERAY = [p for p in FILES if p.name.startswith("kuberay-ray")]


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def scripts(path: Path) -> list[str]:
    """Every `python <script>.py` the file names, in commands, entrypoints and comments alike."""
    return sorted(set(re.findall(r"python3? (\S+\.py)", path.read_text())))


def entrypoint_cases():
    for p in FILES:
        for s in scripts(p):
            yield pytest.param(p, s, id=f"{p.name}:{s}")


def test_there_are_cluster_files_of_each_kind():
    names = {p.name for p in FILES}
    assert {"aws.yaml", "gcp.yaml", "local.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_parses_and_names_no_undefined_shared_volume(path):
    assert docs(path), f"{path.name} is empty"
    text = path.read_text()
    assert "/data" not in text, f"{path.name} names /data, which no cluster file defines: use the storage URI"


@pytest.mark.parametrize("path, script", list(entrypoint_cases()))
def test_each_entrypoint_names_an_existing_script(path, script):
    assert (ROOT / script).is_file(), f"{path.name} runs {script}, which does not exist"


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
def test_autoscaler_files_keep_gpus_off_the_head_and_services_off_public_addresses(path):
    c = yaml.safe_load(path.read_text())
    for key in ("cluster_name", "provider", "auth", "head_start_ray_commands"):
        assert key in c, f"{path.name} has no {key}"
    start = " ".join(c["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    if "available_node_types" not in c:  # the local file: one head, nothing else
        return
    types = c["available_node_types"]
    assert types[c["head_node_type"]]["resources"].get("GPU", 0) == 0, "the head must hold no GPU"
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types.values()), \
        "GPU worker types start at min_workers: 0 and scale up on GPU requests"
    assert "mlflow server" in start and "--host $(hostname -I" in start, "MLflow binds the private address"
    assert "MLFLOW_TRACKING_URI=" in start and "MLFLOW_TRACKING_URI=" in " ".join(c["worker_start_ray_commands"])
    store = "s3://" if c["provider"]["type"] == "aws" else "gs://"
    assert f"--artifacts-destination {store}" in start and f"--out {store}" in path.read_text()


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_files_scale_gpu_workers_from_zero_and_log_to_the_mlflow_service(path):
    (d,) = docs(path)
    spec = d["spec"] if d["kind"] == "RayCluster" else d["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group["replicas"] == 0
    heads = spec["headGroupSpec"]["template"]["spec"]["containers"]
    workers = [c for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    for container in heads + workers:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://rdistill-mlflow:5000"
    (service,) = [x for x in docs(ROOT / "clusters" / "kuberay-mlflow.yaml") if x["kind"] == "Service"]
    assert service["metadata"]["name"] == "rdistill-mlflow" and service["spec"]["type"] == "ClusterIP"
