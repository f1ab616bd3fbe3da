"""The Gaussian diffusion of DiT: the noise schedule, x0 from eps, and the training loss.

1000 steps, linear betas 1e-4..0.02, eps-prediction with a learned-range variance (SPEC.md section 1).
The model's output has 2C channels: eps in the first C, the variance interpolation v in [-1, 1] in the
last C. The loss per sample is MSE(eps, eps_hat) + the variational-bound term, which trains only the
variance channels (its mean input is detached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from diffusers import DDPMScheduler

NUM_TRAIN_STEPS = 1000  # SPEC.md section 1
BETA_START, BETA_END = 1e-4, 0.02  # linear schedule of DDPM / DiT


@dataclass(frozen=True)
class Schedule:
    """Per-step constants of a (possibly respaced) diffusion, all float64 tensors of length T."""

    betas: torch.Tensor
    timesteps: torch.Tensor  # (T,) int64: the model's timestep label of each step (respacing keeps the originals)

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    @cached_property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        a = self.alphas_cumprod
        return torch.cat([a.new_ones(1), a[:-1]])

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        v = self.posterior_variance
        if len(v) == 1:  # a 1-step schedule has no posterior variance; its only step adds no noise
            return torch.log(self.betas)
        return torch.log(torch.cat([v[1:2], v[1:]]))  # step 0's posterior variance is 0: reuse step 1's

    @cached_property
    def posterior_mean_coef1(self) -> torch.Tensor:  # multiplies x0
        return self.betas * torch.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> torch.Tensor:  # multiplies x_t
        a = self.alphas_cumprod
        return (1.0 - self.alphas_cumprod_prev) * torch.sqrt(1.0 - self.betas) / (1.0 - a)


def linear_schedule(num_steps: int = NUM_TRAIN_STEPS) -> Schedule:
    """The training schedule, with betas from diffusers' DDPMScheduler."""
    sched = DDPMScheduler(
        num_train_timesteps=num_steps, beta_schedule="linear", beta_start=BETA_START, beta_end=BETA_END
    )
    return Schedule(betas=sched.betas.double(), timesteps=torch.arange(num_steps))


def respace(base: Schedule, num_steps: int) -> Schedule:
    """Keep `num_steps` evenly strided timesteps of `base` (DiT's space_timesteps with one section)."""
    T = len(base.betas)
    if not 1 <= num_steps <= T:
        raise ValueError(f"cannot respace {T} steps to {num_steps}")
    stride = (T - 1) / (num_steps - 1) if num_steps > 1 else 0.0
    keep = sorted({round(i * stride) for i in range(num_steps)})
    abar = base.alphas_cumprod[keep]
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return Schedule(betas=1.0 - abar / abar_prev, timesteps=base.timesteps[keep])


def extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a[t] shaped to broadcast against x, in x's dtype."""
    return a.to(x.device)[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


# --- The forward process and the model's reverse step ---------------------------------------------


def q_sample(s: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    abar = extract(s.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def predict_x0(s: Schedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x0_hat = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps_hat (SPEC.md section 2; not clipped)."""
    abar = extract(s.alphas_cumprod, t, xt)
    return (1.0 / abar).sqrt() * xt - (1.0 / abar - 1.0).sqrt() * eps


def q_posterior_mean(s: Schedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean of q(x_{t-1} | x_t, x0)."""
    return extract(s.posterior_mean_coef1, t, xt) * x0 + extract(s.posterior_mean_coef2, t, xt) * xt


def learned_log_variance(s: Schedule, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Learned-range variance: interpolate log beta_t and the clipped posterior log variance by (v+1)/2."""
    min_log = extract(s.posterior_log_variance_clipped, t, v)
    max_log = extract(torch.log(s.betas), t, v)
    frac = (v + 1) / 2
    return frac * max_log + (1 - frac) * min_log


# --- The training loss ----------------------------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF used by DDPM / improved DDPM."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of data x in [-1, 1] discretised to 256 bins (the t = 0 decoder term), in nats."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))),
    )
    return log_probs


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,) mean over all but the batch dimension."""
    return x.mean(dim=tuple(range(1, x.dim())))


def vb_term(s: Schedule, x0, xt, t, eps, v) -> torch.Tensor:
    """(N,) variational-bound term in bits: KL for t > 0, decoder NLL at t = 0.

    Pass `eps` detached: the term then trains only the variance channels v (improved DDPM's L_hybrid).
    """
    true_mean = q_posterior_mean(s, x0, xt, t)
    true_log_var = extract(s.posterior_log_variance_clipped, t, xt)
    mean = q_posterior_mean(s, predict_x0(s, xt, t, eps), xt, t)
    log_var = learned_log_variance(s, v, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


@dataclass(frozen=True)
class DiffusionLoss:
    mse: torch.Tensor  # (N,) eps MSE
    vb: torch.Tensor  # (N,) variational-bound term (trains the variance only)
    x0: torch.Tensor  # (N, C, H, W) predicted clean latents, with gradients through eps

    @cached_property
    def per_sample(self) -> torch.Tensor:
        return self.mse + self.vb


def diffusion_loss(s: Schedule, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor) -> DiffusionLoss:
    """DiT's loss for a model output `out` (N, 2C, H, W) = [eps_hat, v] at noisy latents x_t."""
    C = x0.shape[1]
    if out.shape[1] != 2 * C:
        raise ValueError(f"model output has {out.shape[1]} channels; learned sigma needs 2 x {C}")
    eps, v = out[:, :C], out[:, C:]
    mse = mean_flat((noise - eps) ** 2)
    vb = vb_term(s, x0, xt, t, eps.detach(), v)
    return DiffusionLoss(mse=mse, vb=vb, x0=predict_x0(s, xt, t, eps))
