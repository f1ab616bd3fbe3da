"""Throughput of `run_sampling` with 2 Ray workers against 1, on this machine's 2 cores (target >= 1.6x).

The model is the embedded default's: dit-tiny on digits (1x8x8 latents), trained for 3 steps (speed does
not depend on the weights). Each Ray task sets 1 torch thread (cluster.limit_threads); so does the driver.
Both worker processes are warmed up first (torch imported, model loaded), then each worker count samples
the same job into a fresh folder; repeated, alternating the order, best time kept (the machine is shared).
Every run also reports `occupancy` (task time / (workers x elapsed): 1.0 = a task always in flight on each
worker, the driver never the bottleneck) and `task_cpu_per_wall` (CPU time the tasks got per second of
their wall time: well below 1 means other processes held the cores, and the ratio measures the machine).
Writes benchmarks/results/sampling_ray.json and prints the ratio.

    .venv/bin/python benchmarks/sampling_ray.py               # ~4 minutes here
    .venv/bin/python benchmarks/sampling_ray.py --smoke-test  # ~30 s, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402

from rdistill.generate.sampling import SampleJob, generate_chunk, run_sampling  # noqa: E402
from common import machine, write_report  # benchmarks/common.py

TASK_LOG = "tasks.jsonl"  # per-task timings, next to the shards (not *.parquet: readers skip it)
REPEATS = 3  # per worker count, alternating 1, 2, 2, 1, 1, 2, ...


def make_run(folder: Path) -> Path:
    from rdistill.config import load_config
    from rdistill.generate.finetune import train

    cfg = load_config(None, ["data.name=digits", "model.preset=dit-tiny", "train.method=pretrain",
                             "train.max_steps=3", "train.batch_size=16", f"out={folder / 'run'}"])
    return train(cfg, progress=False)


def timed_chunk(job, task, source=None):
    """generate_chunk, appending [task wall s, task CPU s] to TASK_LOG (in __main__: Ray ships it by value)."""
    w0, c0 = time.perf_counter(), time.process_time()
    info = generate_chunk(job, task, source)
    with open(Path(job.out) / TASK_LOG, "a") as f:
        f.write(json.dumps([time.perf_counter() - w0, time.process_time() - c0]) + "\n")
    return info


def measure(job: SampleJob) -> dict:
    """Elapsed time of one job, and how busy its tasks kept the workers (occupancy = task time / (N x elapsed))."""
    shutil.rmtree(job.out, ignore_errors=True)
    t0 = time.perf_counter()
    run_sampling(job, progress=False, chunk_fn=timed_chunk)
    elapsed = time.perf_counter() - t0
    tasks = [json.loads(line) for line in (Path(job.out) / TASK_LOG).read_text().splitlines()]
    wall, cpu = sum(t[0] for t in tasks), sum(t[1] for t in tasks)
    return {"seconds": round(elapsed, 2), "occupancy": round(wall / (job.workers * elapsed), 3),
            "task_cpu_per_wall": round(cpu / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="a tiny job, one repeat, write nothing")
    ap.add_argument("--repeats", type=int, default=REPEATS, help=f"measurements per worker count (default {REPEATS})")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling_ray.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_at_start = os.getloadavg()
    import ray

    # 10 classes x ipc images in tasks of `chunk` images, each one forward of 2 x chunk rows per step:
    ipc, chunk, steps, repeats = (4, 2, 5, 1) if args.smoke_test else (20, 10, 50, args.repeats)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sampling-ray-"))
    try:
        run_dir = make_run(tmp)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

        def job(workers: int, out: str, n: int = ipc) -> SampleJob:
            return SampleJob(run_dir=str(run_dir), out=str(tmp / out), ipc=n, steps=steps, chunk_size=chunk,
                             batch_size=chunk, workers=workers)

        measure(job(2, "warm-up", n=2 * chunk))  # both workers: import torch, load the model
        runs = {1: [], 2: []}
        for r in range(repeats):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                runs[w].append(measure(job(w, f"w{w}")))
                print(f"repeat {r}: {w} worker(s) {runs[w][-1]}")
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n_images = 10 * ipc
    best = {w: min(rs, key=lambda x: x["seconds"]) for w, rs in runs.items()}
    rate = {w: n_images / b["seconds"] for w, b in best.items()}
    ratio = rate[2] / rate[1]
    report = {
        "settings": {"model": "dit-tiny on digits (1x8x8)", "images": n_images, "chunk_size": chunk,
                     "batch_size": chunk, "steps": steps, "guidance": 4.0, "repeats": repeats,
                     "ray_num_cpus": 2, "torch_threads_per_worker": 1},
        "runs": {str(w): rs for w, rs in runs.items()},
        "images_per_s": {str(w): round(v, 2) for w, v in rate.items()},
        "ratio_2_workers_vs_1": round(ratio, 2), "target": 1.6,
        "machine": {**machine(), "ray": ray.__version__, "load_average_at_start": load_at_start},
    }
    print(f"1 worker {rate[1]:.2f} img/s, 2 workers {rate[2]:.2f} img/s: x{ratio:.2f} (target >= 1.6); best runs "
          f"{best[1]} / {best[2]} (task_cpu_per_wall << 1: other processes held the cores)")
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
