"""Tiny random-weight stand-ins saved in the formats of the full-size models (no downloads).

- `save_tiny_vae`: an AutoencoderKL folder like Stable Diffusion's VAE (16x16 RGB -> 4x8x8 latents).
- `save_original_dit`: a `.pt` state_dict in the original DiT layout (like DiT-XL-2-256x256.pt).
- `write_wnid_folder`: an ImageNet-style folder train/<wnid>/*.png, val/<wnid>/*.png.
- `digits_coresets`: tiny surrogate sets of real digits images (random, k-center), one folder per method.
"""

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from rdistill.models.dit import build_dit


def save_tiny_vae(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    vae.save_pretrained(path)
    return path


def original_layout(dit) -> dict[str, torch.Tensor]:
    """The state_dict the original DiT code would hold for this (shared-embedder) diffusers DiT."""
    emb = dit.transformer_blocks[0].norm1.emb
    sd = {
        "x_embedder.proj.weight": dit.pos_embed.proj.weight, "x_embedder.proj.bias": dit.pos_embed.proj.bias,
        "pos_embed": dit.pos_embed.pos_embed,
        "t_embedder.mlp.0.weight": emb.timestep_embedder.linear_1.weight,
        "t_embedder.mlp.0.bias": emb.timestep_embedder.linear_1.bias,
        "t_embedder.mlp.2.weight": emb.timestep_embedder.linear_2.weight,
        "t_embedder.mlp.2.bias": emb.timestep_embedder.linear_2.bias,
        "y_embedder.embedding_table.weight": emb.class_embedder.embedding_table.weight,
        "final_layer.adaLN_modulation.1.weight": dit.proj_out_1.weight,
        "final_layer.adaLN_modulation.1.bias": dit.proj_out_1.bias,
        "final_layer.linear.weight": dit.proj_out_2.weight, "final_layer.linear.bias": dit.proj_out_2.bias,
    }
    for i, b in enumerate(dit.transformer_blocks):
        a = b.attn1
        for p in ("weight", "bias"):
            sd[f"blocks.{i}.attn.qkv.{p}"] = torch.cat([getattr(a.to_q, p), getattr(a.to_k, p), getattr(a.to_v, p)])
            sd[f"blocks.{i}.attn.proj.{p}"] = getattr(a.to_out[0], p)
            sd[f"blocks.{i}.mlp.fc1.{p}"] = getattr(b.ff.net[0].proj, p)
            sd[f"blocks.{i}.mlp.fc2.{p}"] = getattr(b.ff.net[2], p)
            sd[f"blocks.{i}.adaLN_modulation.1.{p}"] = getattr(b.norm1.linear, p)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def random_dit(preset="dit-tiny", sample_size=8, in_channels=4, num_classes=1000, seed=0):
    dit = build_dit(preset, sample_size=sample_size, in_channels=in_channels, num_classes=num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return dit.eval()


def save_original_dit(path: Path, dit) -> Path:
    torch.save(original_layout(dit), path)
    return path


def write_wnid_folder(root: Path, wnids, per_class=6, val_per_class=2, size=16, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for k, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // (k + 1)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.png")
    return root


def digits_coresets(root: Path, ipc: int, methods=("random", "kcenter")) -> Path:
    """root/<method> for each method: a seed-0 coreset of digits at this IPC (k-center on pixels: no network)."""
    from rdistill.data import load_dataset
    from rdistill.generate.select import select_coreset

    d = load_dataset("digits")
    for method in methods:
        select_coreset(d, method, ipc=ipc, seed=0, out=root / method, features="pixels")
    return root
