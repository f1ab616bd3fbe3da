"""The DiT forward with the conditioning embedder computed once (DiTCall's fast_forward_) against diffusers'
plain forward, which runs it in every block and again for the output (issue 12, item 2).

Forward only (sampling) and forward + backward (training), CPU-sized DiT (4x16x16, depth 4, width 256) at
2 and 20 rows (a guided batch of 1 and 10 images); the two models are interleaved, best of rounds.

    python -m benchmarks conditioning
"""

from __future__ import annotations

import copy
import time

import torch

from rdistill.models.dit import dit_callable

from .step import NUM_CLASSES, SHAPE, cpu_dit


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run(smoke_test: bool = False) -> dict:
    repeats, rounds = (2, 1) if smoke_test else (10, 3)
    dit = cpu_dit().eval()
    plain_dit = copy.deepcopy(dit)
    fast = dit_callable(dit)

    def plain(x, t, y):
        return plain_dit(x, timestep=t, class_labels=y).sample

    results = {}
    for rows in (2, 20):
        x, t, y = torch.randn(rows, *SHAPE), torch.full((rows,), 500), torch.arange(rows) % NUM_CLASSES
        for grad in (False, True):
            def call(model):
                if grad:
                    model(x, t, y).square().mean().backward()
                else:
                    with torch.no_grad():
                        model(x, t, y)
            best = {"plain": float("inf"), "fast": float("inf")}
            for _ in range(rounds):
                best["plain"] = min(best["plain"], seconds(lambda: call(plain), repeats))
                best["fast"] = min(best["fast"], seconds(lambda: call(fast), repeats))
            key = f"rows={rows} {'forward+backward' if grad else 'forward'}"
            results[key] = {"plain_s": round(best["plain"], 6), "fast_s": round(best["fast"], 6),
                            "fast/plain": round(best["fast"] / best["plain"], 3)}
            print(f"conditioning {key:28s}: plain {best['plain'] * 1e3:7.2f} ms  once {best['fast'] * 1e3:7.2f} ms"
                  f"  ratio {best['fast'] / best['plain']:.3f}", flush=True)
    return {"settings": {"latent": SHAPE, "depth": 4, "width": 256, "repeats": repeats, "rounds": rounds,
                         "statistic": "best CPU time", "embedder_calls_per_forward": {"plain": 5, "fast": 1}},
            "results": results}
