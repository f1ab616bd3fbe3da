"""Difffit: parameter-efficient fine-tuning of a DiT (Xie et al., 2023), as the paper uses it.

Trainable: every bias, the class-embedding table (with the null class) and new per-channel scale
factors gamma, initialised to 1. Frozen: every weight matrix and the positional embedding. Gammas
exist in the first half of the blocks only, scaling (SPEC.md section 1):
    the attention residual branch (attn1's output), the MLP residual branch (ff's output),
    the q, k and v projections (the original's fused qkv), and the attention output projection.
A fresh Difffit model computes exactly what the base model computes.
"""

from __future__ import annotations

import torch
from diffusers import DiTTransformer2DModel
from torch import nn

GAMMA = "difffit_gamma"  # the parameter's name on each scaled module


def _scale_output(module: nn.Module, inputs, output):
    return output * getattr(module, GAMMA)


def add_gamma(module: nn.Module, dim: int) -> None:
    """Give `module` a per-channel scale on its output (a parameter plus a forward hook)."""
    ref = next(module.parameters())
    module.register_parameter(GAMMA, nn.Parameter(torch.ones(dim, device=ref.device, dtype=ref.dtype)))
    module.register_forward_hook(_scale_output)


def scaled_modules(block: nn.Module) -> list[nn.Module]:
    """The six modules of a block that get a gamma: attention, MLP, q, k, v, output projection."""
    attn = block.attn1
    return [attn, block.ff, attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]]


def apply_difffit(dit: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """Add the gammas to the first half of the blocks and freeze all but Difffit's parameters (in place)."""
    if is_difffit(dit):
        raise ValueError("this DiT already has Difffit gammas")
    hidden = dit.inner_dim
    for block in dit.transformer_blocks[: len(dit.transformer_blocks) // 2]:
        for module in scaled_modules(block):
            add_gamma(module, hidden)
    for name, p in dit.named_parameters():
        p.requires_grad_(is_difffit_trainable(name))
    return dit


def is_difffit(dit: nn.Module) -> bool:
    return any(name.endswith(GAMMA) for name, _ in dit.named_parameters())


def is_difffit_trainable(name: str) -> bool:
    return name.endswith(".bias") or name.endswith(GAMMA) or name.endswith("class_embedder.embedding_table.weight")


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable), each shared parameter counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
