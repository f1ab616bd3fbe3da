"""The flags every command that starts Ray work shares: where Ray is, and what each worker or task asks for.

GPUs are declared, never guessed from the cluster's totals (an autoscaling cluster starts with no GPU
node): `--gpus-per-worker` (default: 1 when --device is cuda, else 0: CPU) goes into every task's request,
and a request no node can hold fails after a bounded wait (`cluster.wait_for_resources`).
"""

from __future__ import annotations

WAIT_SECONDS = 600.0  # how long a request may wait for the autoscaler to add a node that holds it


def add_ray_args(p, address: bool = True) -> None:
    if address:
        p.add_argument("--address", default=None,
                       help="Ray cluster address ('auto', host:port, ray://host:port); default: local Ray")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs each Ray worker or task requests (default: 1 if --device is cuda, else 0: CPU)")
    p.add_argument("--worker-resources", nargs="+", default=[], metavar="NAME=AMOUNT",
                   help="custom Ray resources each worker or task requests, e.g. gpu_node=0.5 (a node type)")


def parse_resources(items: list[str]) -> dict:
    """["gpu_node=0.5"] -> {"gpu_node": 0.5}; ValueError naming a malformed item."""
    out = {}
    for item in items:
        name, _, amount = item.partition("=")
        try:
            out[name] = float(amount)
        except ValueError:
            raise ValueError(f"--worker-resources {item!r} is not NAME=AMOUNT (e.g. gpu_node=0.5)") from None
        if not name or out[name] <= 0:
            raise ValueError(f"--worker-resources {item!r}: need a name and an amount > 0")
    return out


def declared_gpus(args) -> float:
    gpus = args.gpus_per_worker
    if gpus is None:
        return 1.0 if str(getattr(args, "device", "cpu")).startswith("cuda") else 0.0
    if gpus < 0:
        raise ValueError(f"--gpus-per-worker {gpus} is invalid: expected >= 0")
    return float(gpus)


def task_request(args, cpus: float = 1.0) -> dict:
    """Ray options for each task of a command: num_cpus, num_gpus when declared, custom resources."""
    from rdistill.distributed.cluster import requested_options

    opts = requested_options(gpus=declared_gpus(args), cpus=cpus)
    resources = parse_resources(args.worker_resources)
    return {**opts, "resources": resources} if resources else opts
