"""The training step against the bare network, as ratios measured in one process (issue 12, item 3).

Three steps on the same Difffit DiT (CPU-sized: 4x16x16 latents, depth 4, width 256, batch 8, 10 classes):
- bare:    out = model(x_t, t, y); out.square().mean(); backward; AdamW (the network alone);
- difffit: rdistill.generate.finetune.train_step (diffusion loss, label dropout) + backward + AdamW + EMA;
- minimax: the same with the minimax criteria, every class memory full (N_M rows of M and of D).
The kinds are interleaved step by step, CPU time per step, the best of the rounds' medians.

    python -m benchmarks step               # ~1 minute here
    python -m benchmarks step --smoke-test  # seconds, writes nothing
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from rdistill.config import RunConfig
from rdistill.generate.diffusion import linear_schedule
from rdistill.generate.ema import update_ema
from rdistill.generate.finetune import train_step
from rdistill.generate.minimax import MinimaxMemory
from rdistill.models.difffit import apply_difffit, trainable_parameters
from rdistill.models.dit import dit_callable, init_dit_

NUM_CLASSES, BATCH, SHAPE = 10, 8, (4, 16, 16)
MEMORY_SIZES = (64, 1024)


def cpu_dit(depth: int = 4, width: int = 256, heads: int = 4) -> torch.nn.Module:
    """The CPU-sized DiT of the issue (dit-tiny's layout at width 256) with Difffit applied."""
    from rdistill.models.dit import DiTSize, dit_kwargs
    from diffusers import DiTTransformer2DModel
    from rdistill.models.dit import share_embedders

    with torch.device("cpu"):
        dit = DiTTransformer2DModel(**dit_kwargs(DiTSize(depth, width, heads, 2), SHAPE[1], SHAPE[0], NUM_CLASSES))
    dit = init_dit_(share_embedders(dit, check_equal=False), seed=0)
    with torch.no_grad():  # non-zero modulations, so every block does work
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return apply_difffit(dit).train()


class Stepper:
    """One kind of step with its own model, optimiser, EMA and memory; `step()` runs one."""

    def __init__(self, kind: str, memory_size: int, precision: str = "fp32"):
        self.kind = kind
        self.dit = cpu_dit()
        self.params = trainable_parameters(self.dit)
        self.opt = torch.optim.AdamW(self.params.values(), lr=1e-4)
        self.ema = {k: p.detach().clone().float() for k, p in self.params.items()}
        self.model = dit_callable(self.dit)
        self.schedule = linear_schedule()
        method = "difffit" if kind == "bare" else kind
        self.cfg = replace(RunConfig(), train=replace(RunConfig().train, method=method, memory_size=memory_size,
                                                       precision=precision, device="cpu"))
        D = SHAPE[0] * SHAPE[1] * SHAPE[2]
        self.memory = MinimaxMemory(memory_size, D)
        g = torch.Generator().manual_seed(1)
        for c in range(NUM_CLASSES):  # full memories
            rows = torch.randn(memory_size, D, generator=g)
            self.memory.update(rows, rows + 0.1, torch.full((memory_size,), c))
        self.g = torch.Generator().manual_seed(0)

    def step(self) -> None:
        z0 = torch.randn(BATCH, *SHAPE, generator=self.g)
        y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=self.g)
        self.opt.zero_grad(set_to_none=True)
        if self.kind == "bare":
            t = torch.randint(0, 1000, (BATCH,), generator=self.g)
            loss = self.model(z0, t, y).square().mean()
        else:
            loss = train_step(self.model, self.schedule, self.memory, z0, y, y, NUM_CLASSES, self.g, self.cfg)["loss"]
        loss.backward()
        self.opt.step()
        if self.kind != "bare":
            update_ema(self.ema, self.params, 0.9999)


def time_steps(steppers: dict[str, Stepper], steps: int, rounds: int) -> dict[str, list[float]]:
    """CPU seconds per step of each kind: per round, `steps` steps of every kind taken in turn (so a burst of
    machine noise hits all kinds alike), then each kind's median; one list entry per round."""
    for s in steppers.values():  # warm-up
        for _ in range(3):
            s.step()
    out = {k: [] for k in steppers}
    for _ in range(rounds):
        times = {k: [] for k in steppers}
        for _ in range(steps):
            for k, s in steppers.items():
                t0 = time.process_time()  # this process's CPU time: what other processes do matters less
                s.step()
                times[k].append(time.process_time() - t0)
        for k in steppers:
            out[k].append(statistics.median(times[k]))
    return out


def run(smoke_test: bool = False) -> dict:
    steps, rounds = (2, 1) if smoke_test else (15, 4)
    results = {}
    for n_m in MEMORY_SIZES:
        steppers = {k: Stepper(k, n_m) for k in ("bare", "difffit", "minimax")}
        raw = time_steps(steppers, steps, rounds)
        best = {k: min(v) for k, v in raw.items()}
        results[f"N_M={n_m}"] = {
            "seconds_per_step_best": {k: round(v, 6) for k, v in best.items()},
            "seconds_per_step_rounds": {k: [round(x, 6) for x in v] for k, v in raw.items()},
            "ratios": {"minimax/bare": round(best["minimax"] / best["bare"], 3),
                       "minimax/difffit": round(best["minimax"] / best["difffit"], 3),
                       "difffit/bare": round(best["difffit"] / best["bare"], 3)},
        }
        print(f"step N_M={n_m:5d}: " + "  ".join(f"{k} {v * 1e3:.2f} ms" for k, v in best.items())
              + "  " + "  ".join(f"{k} {v:.3f}" for k, v in results[f"N_M={n_m}"]["ratios"].items()), flush=True)
    return {"settings": {"batch": BATCH, "latent": SHAPE, "depth": 4, "width": 256, "classes": NUM_CLASSES,
                         "steps_per_round": steps, "rounds": rounds, "statistic": "min over rounds of the median CPU time per step"},
            "results": results, "targets": {"minimax/bare": {"N_M=64": 1.05, "N_M=1024": 1.10}, "minimax/difffit": 1.02}}
