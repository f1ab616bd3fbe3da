"""`python -m benchmarks [NAME ...] [--smoke-test]`: the issue-12 benchmarks, each writing
benchmarks/results/<name>.json with the machine, versions, threads, raw timings and ratios.

    python -m benchmarks                 # all of them, ~3-4 minutes on 2 cores
    python -m benchmarks step            # one
    python -m benchmarks --smoke-test    # seconds each, writes nothing

Run on a quiet machine if you can: every result is a ratio of timings taken in the same process, which
noise affects less than absolute numbers, but not nothing (the load average is recorded).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import torch

from .common import machine, write_report

BENCHMARKS = {
    "step": "the training step: minimax / bare and minimax / difffit at N_M 64 and 1024",
    "sampling_ipc": "images kept per second at IPC 1, 10, 50 against the bare forward rate",
    "conditioning": "the DiT forward with the conditioning embedded once against diffusers' forward",
}


def versions() -> dict:
    import diffusers
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "numpy": numpy.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], help="benchmarks to run (default: all)")
    ap.add_argument("--smoke-test", action="store_true", help="tiny sizes, write nothing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: comparable on a shared box)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}: {BENCHMARKS[name]}", flush=True)
        module = importlib.import_module(f".{name}", __package__)
        tic = time.perf_counter()
        report = module.run(smoke_test=args.smoke_test)
        report = {"benchmark": name, "what": BENCHMARKS[name], "command": "python -m benchmarks " + name,
                  "seconds": round(time.perf_counter() - tic, 1), "versions": versions(), **report,
                  "machine": machine()}
        write_report(report, args.out / f"{name}.json", args.smoke_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
