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
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

GAMMA = "difffit_gamma"  # the parameter's name on each scaled module


_SCALED: dict[type, type] = {}  # module class -> its subclass whose output is scaled by the gamma


def scaled_class(cls: type) -> type:
    """A subclass of `cls` whose forward returns cls's output times the module's gamma: one multiply per call,
    no Python hook. Registered in this module under its own name, so modules using it pickle."""
    if cls not in _SCALED:
        def forward(self, *args, **kwargs):
            return cls.forward(self, *args, **kwargs) * getattr(self, GAMMA)

        name = f"Scaled{cls.__name__}"
        _SCALED[cls] = globals()[name] = type(name, (cls,), {"forward": forward, "__module__": __name__,
                                                             "__qualname__": name})
    return _SCALED[cls]


for _cls in (nn.Linear, Attention, FeedForward):  # the classes Difffit scales, known before any unpickling
    scaled_class(_cls)


def add_gamma(module: nn.Module, dim: int) -> None:
    """Give `module` a per-channel scale on its output: a parameter, and its class swapped for `scaled_class`
    (state dict, parameters and results unchanged)."""
    ref = next(module.parameters())
    module.register_parameter(GAMMA, nn.Parameter(torch.ones(dim, device=ref.device, dtype=ref.dtype)))
    module.__class__ = scaled_class(type(module))


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
