"""GPUs without a GPU: nodes that declare num_gpus give each task one GPU while the model runs on the CPU."""

import asyncio
import os
import time

import pytest
import ray

from rdistill.distributed.cluster import requested_options, wait_for_resources
from servers import kill_leftovers, node_env, node_processes

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def gpu_nodes(cluster, tmp_path_factory, mlflow_url):
    """Two more nodes: "g1" declares 1 GPU, "g2" declares 2; removed (by their processes' pids) afterwards."""
    c, _ = cluster
    added = []
    try:
        for name, gpus in (("g1", 1), ("g2", 2)):
            env = node_env(tmp_path_factory.mktemp(f"node-{name}"), mlflow_url)
            added.append(c.add_node(num_cpus=2, num_gpus=gpus, resources={name: 2}, env_vars=env))
        c.wait_for_nodes()
        yield
    finally:
        procs = node_processes(added)
        for n in added:
            c.remove_node(n)
        kill_leftovers(procs)


@ray.remote(num_cpus=0)
class Barrier:
    """Tasks that reach it together see each other: proof they ran at the same time, without timing."""

    def __init__(self, n: int):
        self.n, self.arrived = n, 0

    async def arrive(self, timeout: float) -> bool:
        self.arrived += 1
        deadline = time.monotonic() + timeout
        while self.arrived < self.n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.arrived >= self.n


@ray.remote
def trial(barrier=None) -> dict:
    """A stand-in trial: Ray hands it a GPU; torch (which sees none) runs its model on the CPU."""
    import torch

    from rdistill.common.devices import resolve_device

    start = time.time()
    device = resolve_device("cpu")
    out = torch.nn.Linear(4, 2).to(device)(torch.ones(3, 4, device=device))  # (3, 2)
    met = ray.get(barrier.arrive.remote(60.0)) if barrier is not None else None
    return {"start": start, "end": time.time(), "gpus": ray.get_gpu_ids(), "device": out.device.type,
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "met": met}


def run_two(node: str, barrier=None) -> list[dict]:
    options = requested_options(gpus=1, cpus=1)
    return sorted(ray.get([trial.options(**options, resources={node: 1}).remote(barrier) for _ in range(2)]),
                  key=lambda r: r["start"])


def test_one_declared_gpu_runs_two_trials_one_after_the_other(gpu_nodes):
    wait_for_resources({"GPU": 1, "CPU": 1, "g1": 1}, timeout=30)
    a, b = run_two("g1")
    assert a["gpus"] == b["gpus"] == [0] and a["device"] == b["device"] == "cpu"
    assert a["cuda_visible"] == "0"
    assert a["end"] <= b["start"]  # the second started only when the first had given its GPU back


def test_two_declared_gpus_run_two_trials_at_the_same_time(gpu_nodes):
    barrier = Barrier.remote(2)
    a, b = run_two("g2", barrier)
    assert a["met"] and b["met"]  # each saw the other arrive while it was running
    assert max(a["start"], b["start"]) < min(a["end"], b["end"])  # the time stamps overlap
    assert len(a["gpus"]) == len(b["gpus"]) == 1 and a["gpus"] != b["gpus"]
    assert a["device"] == b["device"] == "cpu"
