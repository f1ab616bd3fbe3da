"""Peak driver memory of `run_sampling` at IPC 100 against IPC 10, same 10 classes (target <= 1.1x).

Each measurement runs in a fresh process: set up (imports, Ray, a warm-up job that starts the workers or,
in process, loads the model), then reset the peak RSS (`5 > /proc/self/clear_refs`), start tracemalloc, run
the job, read VmHWM (peak RSS) and tracemalloc's peak (Python heap). Two modes:
- ray: `--workers 2`, the driver only plans and records shards (the production path);
- in-process: `--workers 0`, the one process also samples (its memory is bounded by chunk_size, not IPC).
dit-tiny on digits, chunk 10, 5 sampling steps (memory does not depend on the number of steps).
Writes benchmarks/results/sampling_memory.json and prints the ratios.

    .venv/bin/python benchmarks/sampling_memory.py               # ~2 minutes here
    .venv/bin/python benchmarks/sampling_memory.py --smoke-test  # IPC 2 vs 4, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from common import machine, reset_peak, status_kib, write_report  # benchmarks/common.py

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CHUNK, STEPS = 10, 5



def child(run_dir: str, mode: str, ipc: int, out: str) -> dict:
    """One measurement (in its own process): peak RSS and Python-heap peak while sampling."""
    import torch

    from rdistill.generate.sampling import SampleJob, run_sampling

    torch.set_num_threads(1)
    workers = 2 if mode == "ray" else 0
    if workers:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    job = SampleJob(run_dir=run_dir, out=out, ipc=ipc, steps=STEPS, chunk_size=CHUNK, batch_size=CHUNK,
                    workers=workers)
    run_sampling(SampleJob(**{**job.__dict__, "out": out + "-warm-up", "ipc": 2 * CHUNK}), progress=False)
    rss_before = reset_peak()  # VmHWM := VmRSS
    tracemalloc.start()
    t0 = time.perf_counter()
    run_sampling(job, progress=True)
    seconds = time.perf_counter() - t0
    heap_peak = tracemalloc.get_traced_memory()[1]
    return {"mode": mode, "ipc": ipc, "images": 10 * ipc, "seconds": round(seconds, 2),
            "rss_before_mib": round(rss_before / 1024, 1), "peak_rss_mib": round(status_kib("VmHWM") / 1024, 1),
            "rss_growth_mib": round((status_kib("VmHWM") - rss_before) / 1024, 2),
            "python_heap_peak_mib": round(heap_peak / 2**20, 3)}


def measure(run_dir: Path, mode: str, ipc: int, tmp: Path) -> dict:
    out = tmp / f"{mode}-{ipc}"
    cmd = [sys.executable, __file__, "--child", str(run_dir), mode, str(ipc), str(out)]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="IPC 2 vs 4, write nothing")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling_memory.json")
    args = ap.parse_args()
    small, large = (2, 4) if args.smoke_test else (10, 100)

    from rdistill.config import load_config
    from rdistill.generate.finetune import train

    tmp = Path(tempfile.mkdtemp(prefix="bench-sampling-memory-"))
    try:
        cfg = load_config(None, ["data.name=digits", "model.preset=dit-tiny", "train.method=pretrain",
                                 "train.max_steps=3", "train.batch_size=16", f"out={tmp / 'run'}"])
        run_dir = train(cfg, progress=False)
        rows = [measure(run_dir, mode, ipc, tmp) for mode in ("ray", "in-process") for ipc in (small, large)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = {}
    for mode in ("ray", "in-process"):
        a, b = (next(r for r in rows if r["mode"] == mode and r["ipc"] == i) for i in (small, large))
        ratios[mode] = {"peak_rss": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3),
                        "python_heap_peak": round(b["python_heap_peak_mib"] / a["python_heap_peak_mib"], 3)}
        print(f"{mode:10s} IPC {large} vs {small}: peak RSS {b['peak_rss_mib']} / {a['peak_rss_mib']} MiB "
              f"= x{ratios[mode]['peak_rss']}, Python heap peak {b['python_heap_peak_mib']} / "
              f"{a['python_heap_peak_mib']} MiB = x{ratios[mode]['python_heap_peak']}")
    report = {"settings": {"model": "dit-tiny on digits (1x8x8)", "classes": 10, "chunk_size": CHUNK,
                           "batch_size": CHUNK, "steps": STEPS, "ipc": [small, large]},
              "runs": rows, f"ratio_ipc{large}_vs_ipc{small}": ratios, "target": 1.1,
              "machine": machine()}
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
