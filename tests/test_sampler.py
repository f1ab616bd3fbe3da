import math

import pytest
import torch
from diffusers import DiTTransformer2DModel

from rdistill.generate.diffusion import linear_schedule, respace
from rdistill.generate.sampler import (
    NoiseStream,
    ddim_step,
    ddpm_step,
    guided_output,
    image_seed,
    p_mean_log_variance,
    sample,
)
from rdistill.common.seeds import splitmix64
from rdistill.models.dit import dit_callable

BASE = linear_schedule()
S50 = respace(BASE, 50)


def tiny_dit() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        sample_size=8, in_channels=4, out_channels=8, patch_size=2,
        num_layers=2, num_attention_heads=2, attention_head_dim=32, num_embeds_ada_norm=10,
    )
    return dit.eval()


def rowwise_model(calls: list | None = None):
    """A nonlinear model with no cross-row arithmetic (no matrix kernels): bit-identical per row at any batch size."""

    def model(x, t, y):
        if calls is not None:
            calls.append((x.shape[0], y.clone()))
        w = (0.5 + 0.1 * y.to(x.dtype)).reshape(-1, 1, 1, 1)
        s = (t.to(x.dtype) / 1000).reshape(-1, 1, 1, 1)
        return torch.cat([torch.tanh(w * x + s), torch.tanh(x - s)], dim=1)

    return model


def rel_err(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


# Schedule:

def test_respaced_50_steps_keep_the_base_timesteps_and_abar():
    t = S50.timesteps
    assert len(t) == 50 and t[0] == 0 and t[-1] == 999
    assert t[1] == 20 and t[2] == 41  # round(k * 999 / 49)
    torch.testing.assert_close(S50.alphas_cumprod, BASE.alphas_cumprod[t], rtol=1e-12, atol=0)


# Guidance:

def test_guided_output_guides_the_first_channels_and_keeps_the_rest_conditional():
    cond = torch.cat([torch.full((2, 4, 3, 3), 2.0), torch.full((2, 4, 3, 3), 7.0)], dim=1)  # eps 2, v 7
    uncond = torch.cat([torch.full((2, 4, 3, 3), 1.0), torch.full((2, 4, 3, 3), 9.0)], dim=1)  # eps 1, v 9
    g = guided_output(cond, uncond, 4.0, channels=3)
    assert (g[:, :3] == 5.0).all()  # 1 + 4 * (2 - 1)
    assert (g[:, 3] == 2.0).all() and (g[:, 4:] == 7.0).all()
    g = guided_output(cond, uncond, 4.0, channels=None)
    assert (g[:, :4] == 5.0).all() and (g[:, 4:] == 7.0).all()
    one = guided_output(cond[:, 3:5], uncond[:, 3:5], 4.0, channels=3)  # C = 1 <= 3: all eps guided
    assert (one[:, 0] == 5.0).all() and (one[:, 1] == 7.0).all()
    with pytest.raises(ValueError, match="one shape"):
        guided_output(cond, uncond[:1], 4.0)


# Step math:

def noisy(i, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    abar = S50.alphas_cumprod[i]
    return x0, eps, abar.sqrt() * x0 + (1 - abar).sqrt() * eps


@pytest.mark.parametrize("i", [0, 1, 10, 49])
def test_log_variance_spans_posterior_to_beta(i):
    x0, eps, x = noisy(i)
    for v, want in [(1.0, math.log(S50.betas[i])), (-1.0, float(S50.posterior_log_variance_clipped[i]))]:
        _, log_var, _ = p_mean_log_variance(S50, x, i, torch.cat([eps, torch.full_like(eps, v)], 1))
        torch.testing.assert_close(log_var, torch.full_like(x, want), rtol=1e-12, atol=0)
    if i == 0:  # step 0 has no posterior variance: step 1's is used
        assert S50.posterior_log_variance_clipped[0] == S50.posterior_log_variance_clipped[1]


@pytest.mark.parametrize("i", [1, 10, 49])
def test_true_eps_recovers_x0_and_the_bayes_posterior(i):
    x0, eps, x = noisy(i)
    mean, log_var, x0_hat = p_mean_log_variance(S50, x, i, torch.cat([eps, -torch.ones_like(eps)], 1))
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-10)
    # Bayes: x_{i-1} ~ N(sqrt(abar_prev) x0, 1 - abar_prev), x_i | x_{i-1} ~ N(sqrt(1 - beta) x_{i-1}, beta).
    beta, abar_prev = float(S50.betas[i]), float(S50.alphas_cumprod_prev[i])
    var = 1 / (1 / (1 - abar_prev) + (1 - beta) / beta)
    want = var * (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(1 - beta) * x / beta)
    torch.testing.assert_close(mean, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_var, torch.full_like(x, math.log(var)), rtol=1e-10, atol=0)


def test_ddpm_step_adds_sigma_times_noise_except_at_step_0():
    x0, eps, x = noisy(10)
    z = torch.randn_like(x)
    out = torch.cat([eps, torch.ones_like(eps)], 1)  # v = +1: sigma^2 = beta
    mean, _, _ = p_mean_log_variance(S50, x, 10, out)
    torch.testing.assert_close(ddpm_step(S50, x, 10, out, z) - mean, S50.betas[10].sqrt() * z)
    _, eps0, x_0 = noisy(0)
    out0 = torch.cat([eps0, torch.ones_like(eps0)], 1)
    assert torch.equal(ddpm_step(S50, x_0, 0, out0, z), p_mean_log_variance(S50, x_0, 0, out0)[0])
    with pytest.raises(ValueError, match="step index 10"):
        ddpm_step(S50, x, 10, out, None)


def test_ddim_step_hand_values():
    x0, eps, x = noisy(10)
    out = torch.cat([eps, torch.zeros_like(eps)], 1)
    abar_prev = S50.alphas_cumprod_prev[10]
    torch.testing.assert_close(ddim_step(S50, x, 10, out), abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps)
    z = torch.randn_like(x)  # eta = 1: sigma^2 is the posterior variance
    diff = ddim_step(S50, x, 10, out, eta=1.0, noise=z) - ddim_step(S50, x, 10, out, eta=1.0, noise=0 * z)
    torch.testing.assert_close(diff, S50.posterior_variance[10].sqrt() * z)
    with pytest.raises(ValueError, match="-0.5"):
        ddim_step(S50, x, 10, out, eta=-0.5)


# Noise:

def test_image_seed_is_splitmix64():
    assert len({image_seed(0, 0, 0), image_seed(0, 0, 1), image_seed(0, 1, 0), image_seed(1, 0, 0)}) == 4
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # first output of splitmix64 from state 0 (reference vector)


def test_noise_depends_only_on_seed_label_index():
    L, I = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])
    both = NoiseStream(7, L, I, (2, 3, 3))
    draws = [both.next() for _ in range(3)]  # (3, 2, 3, 3) each
    for k in range(3):
        alone = NoiseStream(7, L[k : k + 1], I[k : k + 1], (2, 3, 3))
        for d in draws:
            assert torch.equal(alone.next()[0], d[k])
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(NoiseStream(7, L[perm], I[perm], (2, 3, 3)).next(), draws[0][perm])
    assert not torch.equal(draws[0], draws[1])
    assert not torch.equal(NoiseStream(8, L, I, (2, 3, 3)).next(), draws[0])
    assert not torch.equal(draws[0][0], draws[0][1]) and not torch.equal(draws[0][0], draws[0][2])


# The loop:

KW = dict(seed=3, shape=(4, 8, 8), num_classes=10, steps=8)
L3, I3 = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])


def compositions(model):
    """One batch, one image at a time, reversed order, and an IPC-5 run against an IPC-10 run."""
    one = sample(model, L3, I3, **KW)
    alone = torch.cat([sample(model, L3[k : k + 1], I3[k : k + 1], **KW) for k in range(3)])
    rev = sample(model, L3.flip(0), I3.flip(0), **KW).flip(0)
    ten = sample(model, torch.full((10,), 2), torch.arange(10), **KW)
    five = sample(model, torch.full((5,), 2), torch.arange(5), **KW)
    return one, alone, rev, ten[:5], five


def test_sampler_adds_no_batch_dependence():
    one, alone, rev, ten5, five = compositions(rowwise_model())
    assert torch.equal(one, alone) and torch.equal(one, rev) and torch.equal(ten5, five)


def test_dit_samples_do_not_depend_on_batch_composition():
    one, alone, rev, ten5, five = compositions(dit_callable(tiny_dit()))
    assert torch.equal(one, rev)  # same batch size, other order: bit-identical
    # Other batch sizes: CPU matrix kernels round differently (~1e-6 per forward; measured 5e-7 relative here).
    assert rel_err(one, alone) < 1e-5 and rel_err(ten5, five) < 1e-5
    assert rel_err(one[0], one[1]) > 0.1  # distinct images


def test_fixed_batch_size_makes_every_image_bit_identical_whatever_shares_its_batch():
    model = dit_callable(tiny_dit())
    run = lambda labels, indices: sample(model, labels, indices, batch_size=4, **KW)
    alone = torch.cat([run(L3[k : k + 1], I3[k : k + 1]) for k in range(3)])
    assert torch.equal(run(L3, I3), alone)
    ten, five = run(torch.full((10,), 2), torch.arange(10)), run(torch.full((5,), 2), torch.arange(5))
    assert torch.equal(ten[:5], five)  # IPC 5 is an exact prefix of IPC 10
    with pytest.raises(ValueError, match="batch_size"):
        run_bad = sample(model, L3, I3, batch_size=0, **KW)  # noqa: F841


def test_batches_are_not_padded_only_kept_images_are_computed():
    calls = []
    sample(rowwise_model(calls), torch.full((5,), 2), torch.arange(5), batch_size=2, **KW)
    assert [n for n, _ in calls[:: KW["steps"]]] == [4, 4, 2]  # guided rows: 2 x (2, 2, 1) images


def test_a_scale_below_one_mixes_toward_the_unconditional_output():
    rows = {}
    for g in (1.0, 0.5, 0.0, 4.0):
        calls = []
        rows[g] = (sample(rowwise_model(calls), torch.full((2,), 2), torch.arange(2), **{**KW, "guidance": g}),
                   {n for n, _ in calls})
    assert rows[1.0][1] == {2} and rows[0.5][1] == rows[0.0][1] == rows[4.0][1] == {4}  # both halves but at 1
    assert not torch.equal(rows[0.5][0], rows[1.0][0]) and not torch.equal(rows[0.5][0], rows[0.0][0])


def test_dit_images_are_bit_identical_at_any_batch_size_and_ipc():
    """fast_forward_ pads the few-row products, so no image depends on its batch (none is padded)."""
    model = dit_callable(tiny_dit())
    labels, indices = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 0, 3, 4])
    whole = sample(model, labels, indices, **KW)
    for b in (1, 2, 3, 4):
        assert torch.equal(sample(model, labels, indices, batch_size=b, **KW), whole), b
    assert torch.equal(sample(model, labels[:1], indices[:1], **KW, guidance=1.0),
                       sample(model, labels, indices, **KW, guidance=1.0)[:1])  # unguided: 1 row alone


def two_forward_reference(model, labels, indices, guidance, steps):
    """The unbatched CFG loop: a conditional and a null-class forward per step."""
    s, noise = respace(BASE, steps), NoiseStream(KW["seed"], labels, indices, KW["shape"])
    x, null = noise.next(), torch.full_like(labels, KW["num_classes"])
    for i in reversed(range(steps)):
        t = torch.full_like(labels, int(s.timesteps[i]))
        out = guided_output(model(x, t, labels), model(x, t, null), guidance, 3)
        x = ddpm_step(s, x, i, out, noise.next())
    return x


def test_batched_cfg_equals_two_forwards_in_one_call_per_step():
    calls = []
    got = sample(rowwise_model(calls), L3, I3, **KW, guidance=4.0)
    assert len(calls) == KW["steps"]
    assert all(n == 6 and y.tolist() == [0, 0, 1, 10, 10, 10] for n, y in calls)
    assert torch.equal(got, two_forward_reference(rowwise_model(), L3, I3, 4.0, KW["steps"]))
    dit = dit_callable(tiny_dit())
    assert rel_err(sample(dit, L3, I3, **KW), two_forward_reference(dit, L3, I3, 4.0, KW["steps"])) < 1e-5
    calls.clear()
    sample(rowwise_model(calls), L3, I3, **KW, guidance=1.0)  # no guidance: one conditional forward
    assert all(n == 3 and y.tolist() == [0, 0, 1] for n, y in calls)


class Oracle(torch.nn.Module):
    """Returns the true eps of a fixed x0 (float64), v = `v`."""

    def __init__(self, x0, v=0.0, mu=None, std=None):
        super().__init__()
        self.x0, self.v, self.mu, self.std = x0, v, mu, std
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the model its dtype

    def forward(self, x, t, y):
        a = BASE.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        if self.mu is None:  # point mass at x0
            eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()
        else:  # Gaussian data N(mu, std^2): eps = E[eps | x_t]
            eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.std**2 + 1 - a)
        return torch.cat([eps, torch.full_like(eps, self.v)], dim=1)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_sampler_with_true_eps_ends_at_x0(method):
    x0 = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = sample(Oracle(x0), L3, I3, seed=0, shape=(2, 4, 4), num_classes=2, guidance=1.0, method=method)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, x0.expand(3, -1, -1, -1), rtol=0, atol=1e-8)


def test_ddpm_variance_brackets_gaussian_data():
    """For N(0.5, 0.3^2) data the posterior variance (v = -1) under- and beta (v = +1) over-disperses."""
    n, stds = 512, {}
    for v in (-1.0, 1.0):
        m = Oracle(None, v=v, mu=0.5, std=0.3)
        out = sample(m, torch.zeros(n, dtype=torch.long), torch.arange(n), seed=0, shape=(1, 4, 4), num_classes=1, guidance=1.0)
        assert abs(out.mean().item() - 0.5) < 0.02
        stds[v] = out.std().item()
    assert stds[-1.0] < 0.29 and stds[1.0] > 0.31  # measured 0.251 and 0.322


def test_model_dtype_is_respected_and_one_step_works():
    dit = tiny_dit().to(torch.bfloat16)
    out = sample(dit_callable(dit), L3, I3, **{**KW, "steps": 1})
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_training_mode_dit_is_refused():
    with pytest.raises(ValueError, match="eval"):
        sample(dit_callable(tiny_dit().train()), L3, I3, **KW)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(steps=0), "got 0"),
        (dict(steps=1001), "got 1001"),
        (dict(guidance=-1.0), "got -1.0"),
        (dict(method="euler"), "'euler'"),
        (dict(labels=torch.tensor([0, 10, 1])), r"\[10\]"),
        (dict(labels=torch.tensor([0, -2, 1])), r"\[-2\]"),
        (dict(indices=torch.tensor([0, 1])), "3 labels but 2 indices"),
        (dict(shape=(8, 8)), r"\(8, 8\)"),
    ],
)
def test_bad_arguments_raise_with_the_value(change, match):
    args = dict(labels=L3, indices=I3, **KW) | change
    with pytest.raises(ValueError, match=match):
        sample(rowwise_model(), **args)
