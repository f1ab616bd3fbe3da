"""A study's two fine-tunes (Difffit, minimax) trained at once as Ray tasks, one core each, against one after
another in the driver with both cores (torch's 2 threads): wall time of `rdistill.study.runs.train_all`.

The real case: the committed Fashion-MNIST base (dit-tiny/4, 28x28 pixels) fine-tuned on the 10 classes with
the paper's settings (batch 8), each run cut to `--steps` steps; digits' base where Fashion-MNIST is not
installed (recorded). The parallel time includes starting Ray. Repeated, alternating the order, best kept.
Writes benchmarks/results/study_finetunes.json and prints the speed-up.

    .venv/bin/python benchmarks/study_finetunes.py               # ~4 minutes here
    .venv/bin/python benchmarks/study_finetunes.py --smoke-test  # ~30 s, writes nothing
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

from rdistill.config import load_config  # noqa: E402
from rdistill.study import StudySettings  # noqa: E402
from rdistill.study.runs import train_all  # noqa: E402
from common import machine, write_report  # benchmarks/common.py

BASES = Path(__file__).resolve().parents[1] / "experiments" / "bases"
PAPER = ["train.batch_size=8", "train.lr=0.001", "train.ema_decay=0.9999", "train.epochs=8"]


def settings(out: Path, steps: int, workers: int) -> StudySettings:
    fashion = Path("/usr/share/datasets/fashion-mnist").is_dir()
    data, base, preset = ("fashion-mnist", "fashion-dit-tiny4", "dit-tiny/4") if fashion else \
        ("digits", "digits-dit-tiny", "dit-tiny")
    base_cfg = load_config(None, ["train.method=pretrain", f"data.name={data}", f"model.preset={preset}",
                                  f"out={BASES / base}"])
    keys = [*PAPER, f"train.max_steps={steps}", f"train.ckpt_every={steps}", f"train.log_every={steps}"]
    return StudySettings(base=base_cfg, target=data, out=str(out), workers=workers,
                         finetune={m: [f"train.method={m}", *keys] for m in ("difffit", "minimax")})


def measure(tmp: Path, steps: int, workers: int, name: str) -> dict:
    """Wall seconds of train_all, and each run's own seconds (its minutes.json entry: load, train, save)."""
    out = tmp / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train_all(settings(out, steps, workers), progress=False)
    wall = time.perf_counter() - t0
    minutes = json.loads((out / "minutes.json").read_text())
    runs = {k.removeprefix("train "): round(60 * v, 2) for k, v in minutes.items()}
    return {"seconds": round(wall, 2), "run_seconds": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="a few steps, one repeat, write nothing")
    ap.add_argument("--steps", type=int, default=2000, help="steps per fine-tune (default 2000)")
    ap.add_argument("--repeats", type=int, default=1, help="measurements per way (default 1)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "study_finetunes.json")
    args = ap.parse_args()
    steps, repeats = (20, 1) if args.smoke_test else (args.steps, args.repeats)
    load_at_start = os.getloadavg()
    torch.set_num_threads(2)  # the driver's own runs use both cores; each Ray task sets one thread
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-study-finetunes-"))
    times = {"one_after_another": [], "at_once": []}
    try:
        for r in range(repeats):
            for way in (("one_after_another", "at_once") if r % 2 == 0 else ("at_once", "one_after_another")):
                times[way].append(measure(tmp, steps, 2 if way == "at_once" else 0, f"{way}-{r}"))
                ray.shutdown()  # each parallel measurement starts its own Ray
                print(f"repeat {r}: {way} {times[way][-1]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    best = {way: min(ts, key=lambda t: t["seconds"]) for way, ts in times.items()}
    speedup = best["one_after_another"]["seconds"] / best["at_once"]["seconds"]
    # steps per second of one run: in a task (one core, beside the other run) and in the driver (both cores)
    rate = {way: round(steps / (sum(b["run_seconds"].values()) / 2), 2) for way, b in best.items()}
    report = {
        "settings": {"data": settings(tmp, steps, 0).target, "runs": ["difffit", "minimax"], "steps_per_run": steps,
                     "batch_size": 8, "repeats": repeats, "driver_torch_threads": 2, "task_torch_threads": 1},
        "measurements": times, "best": best, "speedup_at_once": round(speedup, 2),
        "steps_per_s_of_one_run": rate,
        "machine": {**machine(), "ray": ray.__version__, "load_average_at_start": load_at_start},
    }
    print(f"two fine-tunes of {steps} steps: one after another {best['one_after_another']['seconds']} s, at once "
          f"{best['at_once']['seconds']} s: x{speedup:.2f}; steps/s of one run (load and save included): {rate}")
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
