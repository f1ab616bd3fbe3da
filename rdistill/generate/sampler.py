"""The sampler (SPEC.md section 3): ancestral DDPM on the respaced schedule with DiT's learned-range
variance and classifier-free guidance, deterministic per image.

Small pure functions do the math (`guided_output`, `p_mean_log_variance`, `ddpm_step`, `ddim_step`);
`sample` runs the loop. The model is any `model(x, t, y) -> out` with x (N, C, H, W), t (N,) the ORIGINAL
timestep labels, y (N,) class labels (the null class is `num_classes`) and out (N, 2C, H, W): eps, then the
variance interpolation v in [-1, 1].

Determinism: image `index` of class `label` draws all of its noise from its own CPU torch.Generator seeded
with `image_seed(seed, label, index)`: first the initial latent, then one tensor per step. Its noise
therefore never depends on the batch it is in, its position there, the device or the worker. (The model's
own arithmetic might: CPU matrix kernels round products of a few rows differently, ~1e-6 per
forward; DiTCall's `fast_forward_` pads those, so a DiT's images do not depend on their batch either.)
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from rdistill.common.devices import to_device
from rdistill.common.seeds import derive
from rdistill.models.dit import DiTCall, autocast
from rdistill.generate.diffusion import (NUM_TRAIN_STEPS, Schedule, learned_log_variance, linear_schedule, predict_x0,
                                q_posterior_mean, respace)

DEFAULT_STEPS = 50  # SPEC.md section 3
DEFAULT_GUIDANCE = 4.0  # SPEC.md section 3
DIT_GUIDED_CHANNELS = 3  # DiT guides the first 3 of the 4 latent eps channels (SPEC.md section 3)
METHODS = ("ddpm", "ddim")
DEFAULT_BATCH_SIZE = 25  # images per forward: batches 5-25 run alike per image on CPU, 50 ~6% slower (benchmarks/)
PRECISIONS = ("fp32", "bf16")  # the model's forward: float32, or bfloat16 autocast (the chain stays float32)


# Noise, one generator per image:

def image_seed(seed: int, label: int, index: int) -> int:
    """The 64-bit generator seed of image `index` of class `label` (rdistill.common.seeds.derive)."""
    return derive(seed, label, index)


class NoiseStream:
    """Per-image Gaussian noise for a batch: the k-th `next()` stacks the k-th draw of every image."""

    def __init__(self, seed: int, labels: torch.Tensor, indices: torch.Tensor, shape: tuple[int, ...]):
        _check_ids(labels, indices)
        self.shape = tuple(shape)
        pairs = zip(labels.tolist(), indices.tolist())
        self._gens = [torch.Generator().manual_seed(image_seed(seed, c, k)) for c, k in pairs]

    def next(self) -> torch.Tensor:
        """(N, *shape) float32 on the CPU (CPU generators give the same stream on every machine)."""
        return torch.stack([torch.randn(self.shape, generator=g) for g in self._gens])


# The step math:

def guided_output(
    out_cond: torch.Tensor, out_uncond: torch.Tensor, scale: float, channels: int | None = DIT_GUIDED_CHANNELS
) -> torch.Tensor:
    """Classifier-free guidance on the first `channels` eps channels (None = all); the rest from `out_cond`."""
    if out_cond.shape != out_uncond.shape or out_cond.shape[1] % 2:
        raise ValueError(f"need two (N, 2C, H, W) outputs of one shape, got {tuple(out_cond.shape)} and {tuple(out_uncond.shape)}")
    C = out_cond.shape[1] // 2
    k = C if channels is None else min(channels, C)
    eps_c, eps_u = out_cond[:, :k], out_uncond[:, :k]  # (N, k, H, W)
    return torch.cat([eps_u + scale * (eps_c - eps_u), out_cond[:, k:]], dim=1)  # (N, 2C, H, W)


def p_mean_log_variance(
    schedule: Schedule, x: torch.Tensor, i: int, out: torch.Tensor, clip: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and log variance of p(x_{i-1} | x_i) and the predicted x0, at position i of `schedule`."""
    T, (N, C) = len(schedule.betas), x.shape[:2]
    if not 0 <= i < T:
        raise ValueError(f"step index {i} is outside the schedule's {T} steps")
    if out.shape != (N, 2 * C, *x.shape[2:]):
        raise ValueError(f"model output {tuple(out.shape)} does not match x {tuple(x.shape)}: need (N, 2C, H, W)")
    eps, v = out[:, :C], out[:, C:]  # (N, C, H, W) each
    t = torch.full((N,), i, dtype=torch.long, device=x.device)  # the step index, per image
    x0 = predict_x0(schedule, x, t, eps)  # (N, C, H, W)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    mean = q_posterior_mean(schedule, x0, x, t)
    log_var = learned_log_variance(schedule, v, t)  # (N, C, H, W)
    return mean, log_var, x0


def ddpm_step(
    schedule: Schedule, x: torch.Tensor, i: int, out: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """Ancestral step x_i -> x_{i-1}: mean + sigma * noise, no noise at the last step (i = 0)."""
    mean, log_var, _ = p_mean_log_variance(schedule, x, i, out)
    if i == 0:
        return mean
    if noise is None:
        raise ValueError(f"ddpm_step at step index {i} > 0 needs noise")
    return mean + torch.exp(0.5 * log_var) * noise


def ddim_step(
    schedule: Schedule, x: torch.Tensor, i: int, out: torch.Tensor, eta: float = 0.0, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """DDIM step x_i -> x_{i-1} (Song et al. 2021, Eq. 12); eta = 0 is deterministic, eta = 1 is DDPM-like."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    _, _, x0 = p_mean_log_variance(schedule, x, i, out)
    eps = out[:, : x.shape[1]]  # (N, C, H, W)
    abar, abar_prev = float(schedule.alphas_cumprod[i]), float(schedule.alphas_cumprod_prev[i])
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
    mean = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
    if i == 0 or sigma == 0.0:
        return mean
    if noise is None:
        raise ValueError(f"ddim_step with eta={eta} at step index {i} > 0 needs noise")
    return mean + sigma * noise


# The model and the loop:

def _placement(model) -> tuple[torch.device, torch.dtype]:
    """The model's device and dtype: from its parameters, its `device`/`dtype` attributes, or CPU float32."""
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters(), None)
        return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    return torch.device(getattr(model, "device", "cpu")), getattr(model, "dtype", torch.float32)


def _check_ids(labels: torch.Tensor, indices: torch.Tensor) -> None:
    for name, a in (("labels", labels), ("indices", indices)):
        if a.dim() != 1 or a.is_floating_point() or len(a) == 0:
            raise ValueError(f"{name} must be a non-empty 1-D integer tensor, got {a.dtype} of shape {tuple(a.shape)}")
        if (a < 0).any():
            raise ValueError(f"{name} must be >= 0, got {a[a < 0].tolist()}")
    if len(labels) != len(indices):
        raise ValueError(f"{len(labels)} labels but {len(indices)} indices")


def schedule_on(s: Schedule, device: torch.device) -> Schedule:
    """The schedule with its tensors on `device`, so indexing it by device timesteps copies nothing per step."""
    return Schedule(betas=s.betas.to(device), timesteps=s.timesteps.to(device))


def _check_sample_args(model, labels, indices, shape, num_classes, steps, guidance, guidance_channels, method,
                       precision="fp32") -> None:
    if isinstance(model, DiTCall) and model.training:
        raise ValueError("the DiT is in training mode: label dropout would drop class labels at random; call .eval()")
    _check_ids(labels, indices)
    if num_classes < 1 or (labels >= num_classes).any():
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels[labels >= num_classes].tolist()}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) of positive sizes, got {shape}")
    if not 1 <= steps <= NUM_TRAIN_STEPS:
        raise ValueError(f"steps must be in [1, {NUM_TRAIN_STEPS}], got {steps}")
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    if guidance_channels is not None and guidance_channels < 1:
        raise ValueError(f"guidance_channels must be >= 1 or None, got {guidance_channels}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def sample(
    model,
    labels: torch.Tensor,
    indices: torch.Tensor,
    *,
    seed: int,
    shape: tuple[int, int, int],
    num_classes: int,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    guidance_channels: int | None = DIT_GUIDED_CHANNELS,
    method: str = "ddpm",
    progress: bool = False,
    batch_size: int | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Latents (N, C, H, W) of images `indices` of classes `labels`, on the model's device.

    `steps` of the 1000-step linear schedule, respaced; guidance other than 1 runs the conditional and the
    null-class halves in one forward (below 1 it mixes toward the unconditional output). The chain runs in float32 (float64 for a float64 model); the model sees its dtype.
    With `batch_size`, the images run in consecutive batches of that many (the last one may be shorter;
    nothing is padded, so only kept images are computed). Through DiTCall on the CPU every image is then
    bit-identical whatever else, and however many, are sampled with it (rdistill.models.dit.fast_forward_),
    so IPC 10 is an exact prefix of IPC 100 at any batch size. On CUDA, cuBLAS may choose other kernels
    for other batch sizes: the same batch_size gives the same bytes; a prefix is exact when the smaller
    IPC is a multiple of the batch size.
    """
    _check_sample_args(model, labels, indices, shape, num_classes, steps, guidance, guidance_channels, method,
                       precision)
    kwargs = dict(seed=seed, shape=shape, num_classes=num_classes, steps=steps, guidance=guidance,
                  guidance_channels=guidance_channels, method=method, progress=progress, precision=precision)
    if batch_size is None:
        return _sample_batch(model, labels, indices, **kwargs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = zip(labels.split(batch_size), indices.split(batch_size))
    return torch.cat([_sample_batch(model, lab, idx, **kwargs) for lab, idx in batches])


def _sample_batch(model, labels, indices, *, seed, shape, num_classes, steps, guidance, guidance_channels,
                  method, progress, precision) -> torch.Tensor:
    """One batch of `sample`, run as given. The host never reads a device value (no per-step sync)."""
    # Setup:
    device, dtype = _placement(model)
    chain = torch.promote_types(dtype, torch.float32)
    schedule = respace(linear_schedule(), steps)
    timesteps = schedule.timesteps.tolist()  # read on the host, before the schedule moves to the device
    schedule = schedule_on(schedule, device)
    noise = NoiseStream(seed, labels, indices, shape)
    cfg = guidance != 1.0  # below 1 mixes toward the unconditional output, 0 is unconditional
    y = to_device(labels.long(), device)  # (N,)
    if cfg:
        y = torch.cat([y, torch.full_like(y, num_classes)])  # (2N,): conditional, then null class
    x = to_device(noise.next(), device).to(chain)  # (N, C, H, W)

    # Denoise from the last step to step 0:
    with torch.no_grad():
        for i in tqdm(range(steps - 1, -1, -1), disable=not progress, desc="sampling"):
            t = torch.full_like(y, timesteps[i])  # (N,) or (2N,): original timestep labels
            x_in = torch.cat([x, x]) if cfg else x
            with autocast(device, precision):
                out = model(x_in.to(dtype), t, y)
            out = out.to(chain)  # (N or 2N, 2C, H, W)
            if cfg:
                out = guided_output(*out.chunk(2), guidance, guidance_channels)  # (N, 2C, H, W)
            z = to_device(noise.next(), device).to(chain)  # drawn at every step whatever the method
            x = ddpm_step(schedule, x, i, out, z) if method == "ddpm" else ddim_step(schedule, x, i, out)
    return x
