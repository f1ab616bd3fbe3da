"""Images/s of the batched sampler against one image at a time, on one CPU thread.

Both paths call rdistill.generate.sampler.sample (50 DDPM steps, guidance 4.0, so each step is one forward over
2 x batch rows); "one at a time" calls it with batch 1 per image. Two random-weight DiTs: the embedded
default's size (1x8x8, depth 4, width 128) and a bigger one (4x16x16, depth 4, width 256).
Writes benchmarks/results/sampling_batch.json and prints a table.

    .venv/bin/python benchmarks/sampling_batch.py               # ~5-8 minutes here
    .venv/bin/python benchmarks/sampling_batch.py --smoke-test  # seconds, writes nothing
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel

from rdistill.generate.sampler import sample
from rdistill.models.dit import dit_callable
from common import machine, write_report  # benchmarks/common.py

NUM_CLASSES = 10
MODELS = {  # name: (DiT config, images per batched measurement (at least the batch), one-at-a-time images)
    "tiny-1x8x8-d4-w128": (
        dict(sample_size=8, in_channels=1, out_channels=2, patch_size=2, num_layers=4,
             num_attention_heads=4, attention_head_dim=32, num_embeds_ada_norm=NUM_CLASSES),
        64, 16,
    ),
    "big-4x16x16-d4-w256": (
        dict(sample_size=16, in_channels=4, out_channels=8, patch_size=2, num_layers=4,
             num_attention_heads=4, attention_head_dim=64, num_embeds_ada_norm=NUM_CLASSES),
        8, 8,
    ),
}
BATCH_SIZES = (1, 4, 16, 64)
REPEATS = 2  # best of 2: the machine is shared


def images_per_s(model, shape, n_images, batch, steps) -> dict[str, float]:
    """Best-of-REPEATS rates of sampling n_images (rounded up to whole batches) in batches of `batch`.

    "cpu" divides by this process's CPU time, "wall" by elapsed time; on a shared machine the CPU-time rate
    is the one that does not depend on what other processes do.
    """
    n_calls = -(-n_images // batch)
    labels = torch.arange(n_calls * batch) % NUM_CLASSES
    best = {"cpu": float("inf"), "wall": float("inf")}
    for _ in range(REPEATS):
        c0, w0 = time.process_time(), time.perf_counter()
        for k in range(n_calls):
            sl = slice(k * batch, (k + 1) * batch)
            sample(model, labels[sl], torch.arange(len(labels))[sl], seed=0, shape=shape,
                   num_classes=NUM_CLASSES, steps=steps, guidance=4.0)
        best["cpu"] = min(best["cpu"], time.process_time() - c0)
        best["wall"] = min(best["wall"], time.perf_counter() - w0)
    return {k: n_calls * batch / v for k, v in best.items()}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="2 steps, batches 1 and 4, write nothing")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling_batch.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps, batches = (2, (1, 4)) if args.smoke_test else (50, BATCH_SIZES)

    results = {}
    for name, (cfg, n_batched, n_single) in MODELS.items():
        torch.manual_seed(0)
        dit = DiTTransformer2DModel(**cfg).eval()
        model, shape = dit_callable(dit), (cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
        images_per_s(model, shape, 1, 1, 2)  # warm-up
        single = images_per_s(model, shape, n_single, 1, steps)
        rows = {}
        for b in batches:
            rate = images_per_s(model, shape, max(n_batched, b), b, steps)
            ratio = {k: rate[k] / single[k] for k in rate}
            rows[str(b)] = {"images_per_cpu_s": round(rate["cpu"], 2), "images_per_wall_s": round(rate["wall"], 2),
                            "ratio_cpu": round(ratio["cpu"], 2), "ratio_wall": round(ratio["wall"], 2)}
            print(f"{name:20s} batch {b:3d}: {rate['cpu']:7.2f} img/CPU-s x{ratio['cpu']:5.2f}"
                  f" | {rate['wall']:7.2f} img/wall-s x{ratio['wall']:5.2f}"
                  f"  (one at a time {single['cpu']:.2f} | {single['wall']:.2f})", flush=True)
        n_params = sum(p.numel() for p in dit.parameters())
        results[name] = {"config": cfg, "parameters": n_params, "batched": rows,
                         "one_at_a_time": {f"images_per_{k}_s": round(v, 2) for k, v in single.items()}}

    report = {"settings": {"steps": steps, "guidance": 4.0, "method": "ddpm", "repeats": REPEATS},
              "machine": machine(), "models": results}
    print(f"\n{'model':20s} " + " ".join(f"{'b=' + b:>8s}" for b in map(str, batches)) + "   (images/CPU-s, batched / one at a time)")
    for name, r in results.items():
        print(f"{name:20s} " + " ".join(f"{r['batched'][str(b)]['ratio_cpu']:8.2f}" for b in batches))
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
