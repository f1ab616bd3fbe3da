"""Peak RSS of one evaluation cell (a Ray task's work) on a 256 px ImageFolder, against the estimate that
`rdistill evaluate` checks before any work (rdistill.evaluate.cells.estimate_memory).

Each cell runs in a fresh process, as a Ray task would: load the folder (4 classes x 50 random 256x256
PNGs), take the cell's training images, reset the peak RSS (`5 > /proc/self/clear_refs`), train ConvNet-3
(the `small` protocol's student) for one epoch and test it, read VmHWM. The protocol's batch is 256, so a
cell holds min(256, its images) per batch: surrogate cells at IPC 1 and 5 (batches 4 and 20) and the full
real split at 32 px run here; the full split at 256 px (batch 180, ~tens of GB: the cell the issue saw
killed at 21 GB) is only estimated, which is what `--max-memory` refuses.

    .venv/bin/python benchmarks/evaluate_memory.py               # ~3 minutes here
    .venv/bin/python benchmarks/evaluate_memory.py --smoke-test  # 64 px, 2 classes x 8 images, writes nothing
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
from pathlib import Path

from common import machine, reset_peak, status_kib, write_report  # benchmarks/common.py

STUDENT = "convnet-3"



def make_folder(root: Path, classes: int, per_class: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{k}" / f"{i}.png")
    return root


def child(folder: str, image_size: int, per_class: int | None) -> dict:
    """One cell in this process: `per_class` images of each class (None: the whole train split)."""
    import torch

    from rdistill.data import load_dataset
    from rdistill.evaluate.cells import estimate_memory
    from rdistill.evaluate.protocols import get_protocol
    from rdistill.evaluate.training import train_and_test
    from rdistill.models.students import build_student

    torch.set_num_threads(1)
    d = load_dataset(f"imagefolder:{folder}", image_size=image_size)
    idx = (torch.arange(len(d.train)) if per_class is None else
           torch.cat([d.train.indices_of(k)[:per_class] for k in range(d.num_classes)]))
    x, y = d.train.images(idx), d.train.labels[idx]
    tx, ty = d.test.images(range(len(d.test))), d.test.labels
    protocol = get_protocol("small", 1)
    batch = min(protocol.batch_size, len(x))
    estimate = estimate_memory(build_student(STUDENT, d.num_classes, d.channels, image_size), d, batch)
    before = reset_peak()  # VmHWM := VmRSS
    t0 = time.perf_counter()
    train_and_test(STUDENT, protocol, x, y, tx, ty, num_classes=d.num_classes, seed=0, device="cpu")
    return {"image_size": image_size, "cell": "full" if per_class is None else f"ipc {per_class}",
            "train_images": len(x), "batch": batch, "seconds": round(time.perf_counter() - t0, 1),
            "rss_before_mib": round(before / 1024), "peak_rss_mib": round(status_kib("VmHWM") / 1024),
            "growth_mib": round((status_kib("VmHWM") - before) / 1024),  # the cell's own, data already loaded
            "estimate_mib": round(estimate / 2**20)}  # the check's bound: growth + the data's float pixels


def measure(folder: Path, image_size: int, per_class: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), str(image_size), str(per_class or 0)]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    row = json.loads(res.stdout.strip().splitlines()[-1])
    print(row)
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None)))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="64 px, 2 classes x 8 images, write nothing")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "evaluate_memory.json")
    args = ap.parse_args()
    classes, per_class, size = (2, 8, 64) if args.smoke_test else (4, 50, 256)

    tmp = Path(tempfile.mkdtemp(prefix="bench-evaluate-memory-"))
    try:
        folder = make_folder(tmp / "data", classes, per_class, size)
        rows = [measure(folder, size, 1), measure(folder, size, 5), measure(folder, 32, None)]
        from rdistill.data import load_dataset
        from rdistill.evaluate.cells import estimate_memory
        from rdistill.models.students import build_student

        d = load_dataset(f"imagefolder:{folder}", image_size=size)
        batch = min(256, len(d.train))
        full = estimate_memory(build_student(STUDENT, d.num_classes, d.channels, size), d, batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"settings": {"folder": f"{classes} classes x {per_class} random {size}x{size} PNGs", "student": STUDENT,
                           "protocol": "small, 1 epoch", "torch_threads": 1},
              "cells": rows,
              "full_at_native_size_estimate_mib": {"image_size": size, "batch": batch, "estimate": round(full / 2**20)},
              "machine": machine()}
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
