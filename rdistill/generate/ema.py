"""The EMA of the trained parameters (what sampling uses): its decay schedule, its update, and a plain
warning when a run ends before its EMA has moved from where it started.
"""

from __future__ import annotations

import math
import warnings

import torch


def ema_decay(t, step: int) -> float:
    """The EMA decay at `step` (0-based). Pretraining starts from a random init, so its EMA warms up as
    min(decay, (1 + step) / (10 + step)); fine-tuning keeps the paper's plain decay (its start is the base)."""
    return min(t.ema_decay, (1 + step) / (10 + step)) if t.method == "pretrain" else t.ema_decay


def ema_start_weight(t, steps: int) -> float:
    """The weight an EMA after `steps` updates still gives its starting point: the product of the decays."""
    w = 1.0
    for step in range(steps):
        w *= ema_decay(t, step)
        if w < 1e-6:
            break
    return w


def warn_if_ema_cold(t, steps: int) -> None:
    """Say plainly when a run ends with an EMA (what sampling uses) that has not warmed: in pretraining, a
    warm-up that never reached train.ema_decay; in fine-tuning, an EMA still mostly the base model."""
    if t.method == "pretrain":
        warm = math.ceil((10 * t.ema_decay - 1) / (1 - t.ema_decay))  # first step whose decay is ema_decay
        if steps < warm:
            d = ema_decay(t, max(steps - 1, 0))
            warnings.warn(f"pretraining ended after {steps} steps, before its EMA warmed up to "
                          f"train.ema_decay={t.ema_decay} (step {warm}): the EMA averages about the last "
                          f"{1 / (1 - d):.0f} steps (decay {d:.3f}), not {1 / (1 - t.ema_decay):.0f}")
        return
    w = ema_start_weight(t, steps)
    if w > 0.5:
        need = math.ceil(math.log(0.5) / math.log(t.ema_decay))
        warnings.warn(f"the run ended after {steps} steps with an EMA that is still {w:.0%} the base model "
                      f"(train.ema_decay={t.ema_decay}): samples will show little of this fine-tuning; train "
                      f"{need}+ steps or lower train.ema_decay")


@torch.no_grad()
def update_ema(ema: dict, params: dict, decay: float) -> None:
    for name, p in params.items():
        ema[name].mul_(decay).add_(p.detach().float(), alpha=1 - decay)
