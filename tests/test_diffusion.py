import math

import pytest
import torch

from rdistill.generate.diffusion import (
    diffusion_loss, learned_log_variance, linear_schedule, normal_kl, predict_x0, q_sample, respace, vb_term,
)


def test_linear_schedule_matches_ddpm():
    s = linear_schedule()
    assert len(s.betas) == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.035e-5, rel=1e-2)  # DDPM's abar_T


def test_predict_x0_inverts_q_sample():
    s = linear_schedule()
    x0, noise = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    t = torch.tensor([0, 10, 500, 999])
    xt = q_sample(s, x0, t, noise)
    assert torch.allclose(predict_x0(s, xt, t, noise), x0, atol=1e-3)


def test_learned_variance_interpolates_between_beta_and_posterior():
    s = linear_schedule()
    t = torch.tensor([5])
    ones = torch.ones(1, 1)
    assert learned_log_variance(s, ones, t).item() == pytest.approx(math.log(s.betas[5].item()), rel=1e-5)
    lo = learned_log_variance(s, -ones, t).item()
    assert lo == pytest.approx(s.posterior_log_variance_clipped[5].item(), rel=1e-5)


def test_normal_kl_hand_values():
    z = torch.zeros(1)
    assert normal_kl(z, z, z, z).item() == 0
    assert normal_kl(z + 1, z, z, z).item() == pytest.approx(0.5)  # (mu1 - mu2)^2 / 2


def test_loss_with_true_eps_has_zero_mse_and_vb_trains_only_the_variance():
    s = linear_schedule()
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 100, 999])
    xt = q_sample(s, x0, t, noise)
    eps = noise.clone().requires_grad_(True)
    v = torch.zeros_like(noise, requires_grad=True)
    d = diffusion_loss(s, torch.cat([eps, v], 1), x0, xt, t, noise)
    assert d.mse.abs().max().item() < 1e-12
    d.vb.sum().backward()
    assert eps.grad is None or eps.grad.abs().max() == 0  # eps's path into vb is detached
    assert v.grad.abs().sum() > 0
    assert torch.allclose(d.x0, x0, atol=1e-3)


def test_vb_is_minimal_at_the_true_posterior_variance():
    s = linear_schedule()
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t = torch.tensor([300, 300])
    xt = q_sample(s, x0, t, noise)
    vb = [vb_term(s, x0, xt, t, noise, torch.full_like(x0, v)).mean().item() for v in (-1.0, 0.0, 1.0)]
    assert vb[0] == pytest.approx(0.0, abs=1e-6)  # v = -1 is the true posterior variance: KL 0
    assert vb[0] < vb[1] < vb[2]


def test_loss_rejects_output_without_learned_sigma():
    s = linear_schedule()
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="learned sigma"):
        diffusion_loss(s, x, x, x, torch.tensor([1]), x)


def test_respace_keeps_the_cumulative_products():
    base = linear_schedule()
    r = respace(base, 50)
    assert len(r.timesteps) == 50 and r.timesteps[0] == 0 and r.timesteps[-1] == 999
    assert torch.allclose(r.alphas_cumprod, base.alphas_cumprod[r.timesteps])
