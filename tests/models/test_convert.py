"""The original DiT checkpoint -> diffusers conversion, checked against the original formulas.

`original_forward` below re-implements the reference DiT forward (facebookresearch/DiT models.py) as
plain functions of an original-layout state_dict; a converted diffusers model must reproduce it.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel

from rdistill.models.convert import (
    DIT_HEADS,
    convert_original_state_dict,
    infer_original_config,
    load_original_checkpoint,
)

DEPTH, HIDDEN, HEADS, PATCH, IN_CH, CLASSES, SIZE = 2, 64, 2, 2, 4, 10, 8
OUT_CH = 2 * IN_CH  # learn_sigma
FREQ_DIM = 256  # frequency embedding size of the original t_embedder


# The original DiT, as formulas --------------------------------------------------------------------


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))  # (D/2,)
    out = pos.reshape(-1, 1) * omega[None]  # (M, D/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    g = torch.arange(grid_size, dtype=torch.float64)
    grid_a, grid_b = torch.meshgrid(g, g, indexing="xy")  # as np.meshgrid(grid_w, grid_h): w first
    return torch.cat([sincos_1d(dim // 2, grid_a), sincos_1d(dim // 2, grid_b)], dim=1).float()  # (T, D)


def timestep_embedding(t: torch.Tensor, dim: int = FREQ_DIM) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)  # divides by 128
    args = t[:, None].float() * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim)


def linear(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def attention(x, sd, name, heads):
    n, t, d = x.shape
    qkv = linear(x, sd, f"{name}.qkv").reshape(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (N, H, T, D/H) each
    attn = (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(dim=-1)  # (N, H, T, T)
    return linear((attn @ v).transpose(1, 2).reshape(n, t, d), sd, f"{name}.proj")


def original_forward(sd, x, t, y, heads=HEADS):
    p = sd["x_embedder.proj.weight"].shape[-1]
    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=p)  # (N, D, h, w)
    h = h.flatten(2).transpose(1, 2) + sd["pos_embed"]  # (N, T, D)
    t_emb = linear(F.silu(linear(timestep_embedding(t), sd, "t_embedder.mlp.0")), sd, "t_embedder.mlp.2")
    c = t_emb + sd["y_embedder.embedding_table.weight"][y]  # (N, D)
    for i in range(infer_original_config(sd)["depth"]):
        b = f"blocks.{i}"
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = linear(
            F.silu(c), sd, f"{b}.adaLN_modulation.1").chunk(6, dim=1)
        h = h + gate_msa[:, None] * attention(modulate(norm(h), shift_msa, scale_msa), sd, f"{b}.attn", heads)
        mlp_in = modulate(norm(h), shift_mlp, scale_mlp)
        mlp = linear(F.gelu(linear(mlp_in, sd, f"{b}.mlp.fc1"), approximate="tanh"), sd, f"{b}.mlp.fc2")
        h = h + gate_mlp[:, None] * mlp
    shift, scale = linear(F.silu(c), sd, "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    h = linear(modulate(norm(h), shift, scale), sd, "final_layer.linear")  # (N, T, p*p*C)
    n, grid, c_out = h.shape[0], round(h.shape[1] ** 0.5), h.shape[-1] // (p * p)
    h = torch.einsum("nhwpqc->nchpwq", h.reshape(n, grid, grid, p, p, c_out))
    return h.reshape(n, c_out, grid * p, grid * p)


def original_shapes(depth=DEPTH, hidden=HIDDEN, classes=CLASSES, grid=SIZE // PATCH) -> dict:
    """Name -> shape of an original DiT (learn_sigma, IN_CH channels, patch PATCH)."""
    d, out = hidden, PATCH * PATCH * OUT_CH
    shapes = {"x_embedder.proj.weight": (d, IN_CH, PATCH, PATCH), "x_embedder.proj.bias": (d,),
              "pos_embed": (1, grid * grid, d),
              "t_embedder.mlp.0.weight": (d, FREQ_DIM), "t_embedder.mlp.0.bias": (d,),
              "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
              "y_embedder.embedding_table.weight": (classes + 1, d),  # + the null class
              "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
              "final_layer.linear.weight": (out, d), "final_layer.linear.bias": (out,)}
    for i in range(depth):
        for name, (rows, cols) in {"attn.qkv": (3 * d, d), "attn.proj": (d, d), "mlp.fc1": (4 * d, d),
                                   "mlp.fc2": (d, 4 * d), "adaLN_modulation.1": (6 * d, d)}.items():
            shapes[f"blocks.{i}.{name}.weight"], shapes[f"blocks.{i}.{name}.bias"] = (rows, cols), (rows,)
    return shapes


def original_state_dict(seed=0, depth=DEPTH, hidden=HIDDEN) -> dict:
    """Random non-zero weights everywhere (adaLN included, so gates are not zero), fixed pos_embed."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in original_shapes(depth, hidden).items():
        fan_in = math.prod(shape[1:])  # weights scaled so activations stay O(1); biases 0.1
        sd[name] = torch.randn(*shape, generator=g) * (0.1 if len(shape) == 1 else fan_in**-0.5)
    sd["y_embedder.embedding_table.weight"] = torch.randn(CLASSES + 1, hidden, generator=g)
    sd["pos_embed"] = sincos_2d(hidden, SIZE // PATCH)[None]  # (1, T, D)
    return sd


def diffusers_model(sd, fix_timesteps=True) -> DiTTransformer2DModel:
    config, new_sd = convert_original_state_dict(sd, num_heads=HEADS)
    model = DiTTransformer2DModel(**config)
    model.load_state_dict(new_sd, strict=True)
    if fix_timesteps:  # the original divides the frequencies by 128, diffusers by 127
        for block in model.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 0
    return model.eval()


def inputs(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN_CH, SIZE, SIZE, generator=g)
    t = torch.tensor([0, 17, 500, 999])[:n]
    y = torch.tensor([0, 3, 9, CLASSES])[:n]  # CLASSES is the null class
    return x, t, y


@torch.no_grad()
def run(model, x, t, y):
    return model(x, timestep=t, class_labels=y).sample


# Conversion ---------------------------------------------------------------------------------------


def test_converted_model_matches_original_forward():
    sd, (x, t, y) = original_state_dict(), inputs()
    expected = original_forward(sd, x, t, y)
    assert expected.shape == (4, OUT_CH, SIZE, SIZE) and expected.abs().mean() > 0.1
    torch.testing.assert_close(run(diffusers_model(sd), x, t, y), expected, atol=1e-5, rtol=1e-5)


def test_without_timestep_fix_the_outputs_differ():
    sd, (x, t, y) = original_state_dict(), inputs()
    diff = (run(diffusers_model(sd, fix_timesteps=False), x, t, y) - original_forward(sd, x, t, y)).abs()
    print(f"max abs diff without the downscale_freq_shift fix: {diff.max():.4g}")
    assert diff[t == 0].max() < 1e-5  # t = 0 embeds the same either way
    assert diff.max() > 1e-2


def test_infer_original_config_reads_tiny_sizes():
    assert infer_original_config(original_state_dict()) == {
        "depth": DEPTH, "hidden_size": HIDDEN, "patch_size": PATCH, "in_channels": IN_CH,
        "out_channels": OUT_CH, "num_classes": CLASSES, "sample_size": SIZE}


def test_infer_original_config_reads_xl2_shapes():
    meta = torch.device("meta")  # DiT-XL/2 at 256x256 as shapes only; grid = 256 px / VAE 8 / patch 2
    xl = {k: torch.empty(s, device=meta) for k, s in original_shapes(28, 1152, 1000, grid=256 // 8 // 2).items()}
    cfg = infer_original_config(xl)
    assert cfg == {"depth": 28, "hidden_size": 1152, "patch_size": 2, "in_channels": 4, "out_channels": 8,
                   "num_classes": 1000, "sample_size": 32}
    assert cfg["hidden_size"] // DIT_HEADS[cfg["hidden_size"]] == 72  # XL/2: 16 heads of 72


def test_converted_config_and_default_heads():
    sd = original_state_dict(hidden=384)
    config, new_sd = convert_original_state_dict(sd)  # 384 is DiT-S: 6 heads by default
    assert config["num_attention_heads"] == 6 and config["attention_head_dim"] == 64
    assert config["num_embeds_ada_norm"] == CLASSES and config["norm_eps"] == 1e-6
    assert len([k for k in new_sd if k.endswith("norm1.emb.class_embedder.embedding_table.weight")]) == DEPTH


@pytest.mark.parametrize("num_heads", [3, 0])
def test_num_heads_must_divide_hidden(num_heads):
    with pytest.raises(ValueError, match=f"num_heads={num_heads}"):
        convert_original_state_dict(original_state_dict(), num_heads=num_heads)


def test_unknown_hidden_size_needs_num_heads():
    with pytest.raises(ValueError, match="num_heads=None for hidden size 64"):
        convert_original_state_dict(original_state_dict())


def test_missing_and_unexpected_keys_are_named():
    sd = original_state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(HIDDEN)
    with pytest.raises(ValueError, match=r"missing keys \[blocks.1.mlp.fc2.bias\].*"
                                         r"unexpected keys \[blocks.0.attn.q_norm.weight\]"):
        infer_original_config(sd)


def test_pos_embed_other_than_fixed_sincos_is_refused():
    sd = original_state_dict()
    sd["pos_embed"] = sd["pos_embed"] + 1e-3
    with pytest.raises(ValueError, match="pos_embed differs"):
        convert_original_state_dict(sd, num_heads=HEADS)


# Loading a file -----------------------------------------------------------------------------------


def test_load_plain_state_dict_file(tmp_path):
    sd, (x, t, y) = original_state_dict(), inputs()
    torch.save(sd, tmp_path / "DiT-tiny.pt")
    model = load_original_checkpoint(tmp_path / "DiT-tiny.pt", num_heads=HEADS)
    assert not model.training  # label dropout off, as after from_pretrained
    torch.testing.assert_close(run(model, x, t, y), run(diffusers_model(sd, fix_timesteps=False), x, t, y),
                               atol=0, rtol=0)


def test_load_training_checkpoint_prefers_ema(tmp_path):
    ema, raw, (x, t, y) = original_state_dict(seed=0), original_state_dict(seed=5), inputs()
    args = argparse.Namespace(model="DiT-XL/2", image_size=256)  # DiT's train.py pickles its args
    torch.save({"model": raw, "ema": ema, "opt": {"state": {}}, "args": args}, tmp_path / "0001000.pt")
    model = load_original_checkpoint(tmp_path / "0001000.pt", num_heads=HEADS)
    for block in model.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    torch.testing.assert_close(run(model, x, t, y), original_forward(ema, x, t, y), atol=1e-5, rtol=1e-5)


def test_load_model_only_wrapper(tmp_path):
    sd = original_state_dict()
    torch.save({"model": sd}, tmp_path / "ckpt.pt")
    model = load_original_checkpoint(tmp_path / "ckpt.pt", num_heads=HEADS)
    torch.testing.assert_close(model.proj_out_2.weight, sd["final_layer.linear.weight"], atol=0, rtol=0)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_original_checkpoint(tmp_path / "nope.pt", num_heads=HEADS)


def test_file_without_state_dict_is_refused(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="holds a Tensor, not a DiT state_dict"):
        load_original_checkpoint(tmp_path / "tensor.pt", num_heads=HEADS)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable torch checkpoint"):
        load_original_checkpoint(tmp_path / "text.pt", num_heads=HEADS)
