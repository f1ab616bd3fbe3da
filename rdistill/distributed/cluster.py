"""Ray as an edge: connect (a local Ray or a cluster), read its resources, size tasks to them.

Every Ray entry point of rdistill calls `connect()` once; the core never imports ray.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

# Quiet, local-friendly defaults; a user's environment wins (STACK.md).
RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",  # each ray.train.report blocks ~2 s otherwise
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_task_oom_retries": "1",  # Ray's default (-1) re-runs a task its memory monitor killed, forever
    # Ray adds this to the raylet's niceness (for a local Ray, the driver's) and defaults to 15: beside any nice-0
    # work a study's tasks got ~3 % of a core (docs/results.md section 9). A local Ray's workers are the job;
    # `ray job submit` sets 0 for its drivers the same way.
    "RAY_worker_niceness": "0",
}
# A local Ray on loopback only. Ray 2.60 resolves even _node_ip_address="127.0.0.1" to the outbound address
# and its servers listen on * / 0.0.0.0; with this setting (Ray's single-machine mode, the default on macOS
# and Windows) the node IP is 127.0.0.1 and the GCS, raylet, workers, agents and metrics bind to it
# (tests/test_errors.py checks with `ss -ltn`). Read by ray._private.ray_constants at import.
LOOPBACK_ENV = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """ray.init once: `address` None starts a new local Ray (never joins a `ray start` cluster that happens to
    run on this machine; RAY_ADDRESS still wins); "auto" or "ray://host:port" joins a cluster.

    An unreachable address raises ValueError naming it, before any work starts.
    """
    check_address(address)
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local:
        os.environ[LOOPBACK_ENV[0]] = LOOPBACK_ENV[1]  # before Ray is imported
    import ray

    if ray.is_initialized():
        return ray
    if local:  # Ray imported earlier (by another module) read the setting already: set what it set
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs = {"include_dashboard": False} if local else {}
    if local and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address="local" if local else address, log_to_driver=not quiet, configure_logging=True,
                 logging_level="ERROR" if quiet else "INFO", **kwargs)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {e}") from None
    finally:  # ray.init replaces SIGTERM's handler (sys.exit); keep the caller's (the CLI's: stop, exit 143)
        if callable(sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)
    return ray


def check_address(address: str | None) -> None:
    """A quick TCP check of host:port or ray://host:port: ray.init waits minutes on an address nobody serves."""
    import socket

    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {e}") from None


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float

    @property
    def has_gpu(self) -> bool:
        return self.gpus >= 1


def resources() -> Resources:
    """What the connected cluster has in total."""
    import ray

    total = ray.cluster_resources()
    return Resources(cpus=total.get("CPU", 0.0), gpus=total.get("GPU", 0.0))


def limit_threads(cpus: float) -> None:
    """Inside a worker: torch threads = the task's CPU share (two 2-thread processes on 2 cores thrash)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def requested_options(gpus: float = 0.0, cpus: float = 1.0) -> dict:
    """Ray options for a declared request (not read from the cluster's totals): num_gpus only when asked."""
    if gpus < 0 or cpus <= 0:
        raise ValueError(f"a task needs gpus >= 0 and cpus > 0, got gpus={gpus}, cpus={cpus}")
    return {"num_cpus": cpus, "num_gpus": gpus} if gpus else {"num_cpus": cpus}


def node_fits(node_resources: dict, request: dict) -> bool:
    """Whether one node's total resources hold `request` ({"GPU": 1, "CPU": 1}); a pure check."""
    return all(node_resources.get(k, 0.0) >= v for k, v in request.items() if v)


def wait_for_resources(request: dict, timeout: float = 600.0, poll: float = 1.0) -> None:
    """Before submitting work that asks `request` per task: wait until one alive node could hold it.

    An autoscaler is told about the request (ray.autoscaler.sdk.request_resources), so a cluster whose GPU
    worker type starts at min_workers: 0 scales one up; without an autoscaler nothing changes. After
    `timeout` seconds with no such node: ValueError naming the request and what the cluster has, instead
    of tasks that stay pending forever.
    """
    import time

    import ray
    from ray.autoscaler.sdk import request_resources

    request = {k: float(v) for k, v in request.items() if v}
    fits = lambda: any(n["Alive"] and node_fits(n["Resources"], request) for n in ray.nodes())  # noqa: E731
    if fits():
        return
    request_resources(bundles=[request])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(poll)
            if fits():
                return
    finally:
        request_resources(bundles=[])
    have = [{k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU") or k in request}
            for n in ray.nodes() if n["Alive"]]
    raise ValueError(f"no node of the Ray cluster can run a task that asks {request} after waiting {timeout:.0f} s "
                     f"(alive nodes have {have}); add a node type with these resources to the cluster "
                     "(clusters/*.yaml: gpu_worker) or request fewer (drop --gpus-per-worker)")
