"""experiments/imagenet1k.py: the whole graph on a synthetic ImageNet-shaped tree (--smoke-test), resumed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import write_wnid_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "imagenet1k.py"


def run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=900)


def test_a_root_missing_classes_is_refused_in_one_line(tmp_path):
    root = write_wnid_folder(tmp_path / "in", ["n01440764", "n01443537"], per_class=1, val_per_class=1, size=8)
    p = run("--root", root, "--dit", tmp_path / "none.pt", "--vae", tmp_path / "vae", "--out", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "train/ misses 998 of 1000 classes: n01484850 (great white shark)" in p.stderr


@pytest.mark.slow
@pytest.mark.ray
def test_smoke_test_runs_the_whole_graph_and_a_resubmission_skips_finished_work(tmp_path):
    from mlflow import MlflowClient

    from rdistill.data.shards import Manifest

    p = run("--smoke-test", "--out", tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 phases of 4 classes; the last holds 2" in p.stdout
    merged = Manifest.load(tmp_path / "sets" / "minimax-ipc2")
    assert len(merged.classes) == 6 and set(merged.counts.values()) == {2} and len(merged.shards) == 6
    kept = sorted(f.name for f in (tmp_path / "cells").iterdir())
    assert [re.fullmatch(r"(minimax-ipc\d-resnet-18-seed0)-[0-9a-f]{12}\.pkl", k)[1] for k in kept] == [
        "minimax-ipc1-resnet-18-seed0", "minimax-ipc2-resnet-18-seed0"]
    assert not any((tmp_path / "phases").glob("*/latents"))  # latents live in the shared store only
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imagenet1k").experiment_id
    (job,) = client.search_runs([exp], "tags.job_fingerprint != ''")
    assert job.data.tags["stage"].startswith("done") and "final_acc.ipc2.resnet-18" in job.data.metrics
    assert "MMD" in (tmp_path / "matrix.md").read_text() and (tmp_path / "matrix" / "plots" / "tsne.png").exists()
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{job.data.tags['matrix_run']}'")
    assert len(children) == 2

    again = run("--smoke-test", "--out", tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "latents: 0 of 6 chunks encoded now" in again.stdout and "2 of 2 cells done before" in again.stdout
    assert Manifest.load(tmp_path / "sets" / "minimax-ipc2").shards == merged.shards
    assert len(client.search_runs([exp], "tags.job_fingerprint != ''")) == 1  # the same parent run


@pytest.mark.ray
def test_gpus_required_on_a_cluster_without_gpus_is_refused_in_one_line(tmp_path):
    p = run("--smoke-test", "--gpus", "--gpu-wait", "1", "--out", tmp_path)
    assert p.returncode == 2
    (line,) = [x for x in p.stderr.splitlines() if x.startswith("imagenet1k: error:")]
    assert "no node of the Ray cluster can run a task that asks {'GPU': 1.0}" in line
