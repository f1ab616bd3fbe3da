"""Images kept per second when sampling IPC 1, 10 and 50 images of a class, against the bare forward rate
(issue 12, item 1), and the bare forward rate by batch size (which sets SampleJob's default batch_size).

- bare(B):   images/s if every forward were a plain DiT forward over the 2B rows of a guided batch of B
             images (the model alone: no noise, no step math, no conditioning memo);
- kept(IPC): images/s of rdistill.generate.sampler.sample for IPC images of one class at the default
             batch size, counting only the images kept (nothing is padded; before issue 12 every batch
             was padded to 50 images, i.e. IPC 1 computed 50 and IPC 10 computed 50).
CPU-sized DiT (4x16x16 latents, depth 4, width 256), guidance 4, 10 steps (a rate per step does not
depend on the number of steps), one thread.

    python -m benchmarks sampling_ipc               # ~1 minute here
    python -m benchmarks sampling_ipc --smoke-test  # seconds, writes nothing
"""

from __future__ import annotations

import copy
import time

import torch

from rdistill.generate.sampler import sample
from rdistill.generate.sampling import SampleJob
from rdistill.models.dit import dit_callable

from .step import NUM_CLASSES, SHAPE, cpu_dit

BATCHES = (1, 2, 5, 10, 16, 25, 50)
IPCS = (1, 10, 50)


def bare_rate(dit, batch: int, repeats: int) -> float:
    """Images/s of plain forwards over a guided batch (2 * batch rows), best of `repeats` timed forwards."""
    x = torch.randn(2 * batch, *SHAPE)
    t, y = torch.full((2 * batch,), 500), torch.arange(2 * batch) % NUM_CLASSES
    best = float("inf")
    with torch.no_grad():
        dit(x, timestep=t, class_labels=y)  # warm-up
        for _ in range(repeats):
            t0 = time.process_time()
            dit(x, timestep=t, class_labels=y)
            best = min(best, time.process_time() - t0)
    return batch / best


def kept_rate(model, ipc: int, batch: int, steps: int, repeats: int) -> float:
    """Images kept per second, per sampling step, sampling `ipc` images of class 3 in batches of `batch`."""
    labels, indices = torch.full((ipc,), 3), torch.arange(ipc)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        sample(model, labels, indices, seed=0, shape=SHAPE, num_classes=NUM_CLASSES, steps=steps, batch_size=batch)
        best = min(best, time.process_time() - t0)
    return ipc * steps / best


def run(smoke_test: bool = False) -> dict:
    steps, repeats = (2, 1) if smoke_test else (10, 2)
    batches = (1, 10) if smoke_test else BATCHES
    ipcs = (1, 10) if smoke_test else IPCS
    torch.manual_seed(0)
    dit = cpu_dit().eval()
    bare_dit = copy.deepcopy(dit)  # stays a plain diffusers model (DiTCall patches its own)
    model = dit_callable(dit)
    default = SampleJob.__dataclass_fields__["batch_size"].default

    bare = {b: bare_rate(bare_dit, b, 3 if smoke_test else 8) for b in batches}
    for b, r in bare.items():
        print(f"bare forward, batch {b:3d}: {r:7.2f} image-steps/s ({r / bare[batches[-1]]:.2f} x batch {batches[-1]})",
              flush=True)
    kept, bare_default = {}, bare.get(default) or bare_rate(bare_dit, default, 3)
    for ipc in ipcs:
        b = min(default, ipc)
        reference = bare.get(b) or bare_rate(bare_dit, b, 3)
        rate = kept_rate(model, ipc, default, steps, repeats)
        kept[ipc] = {"batch_size": default, "kept_image_steps_per_s": round(rate, 2),
                     "bare_image_steps_per_s_same_batch": round(reference, 2),
                     "kept/bare_same_batch": round(rate / reference, 3),
                     "kept/bare_default_batch": round(rate / bare_default, 3),
                     "before_issue_12_computed_per_kept": 50 / ipc if ipc < 50 else 1.0}
        print(f"IPC {ipc:3d} at batch {default}: {rate:7.2f} kept image-steps/s = {rate / reference:.3f} x the bare "
              f"forward at batch {b} ({rate / bare_default:.3f} x at batch {default})", flush=True)
    return {"settings": {"latent": SHAPE, "depth": 4, "width": 256, "guidance": 4.0, "steps": steps,
                         "repeats": repeats, "statistic": "best of repeats", "default_batch_size": default},
            "bare_forward_image_steps_per_s": {str(b): round(r, 2) for b, r in bare.items()},
            "kept": {str(k): v for k, v in kept.items()}}
