"""DiT through diffusers' DiTTransformer2DModel: presets by name, the original DiT's shared embedders,
initialisation for training from scratch, and loading from a diffusers folder.

diffusers gives every block its own timestep MLP and class table (`norm1.emb`); the original DiT has one
of each. `share_embedders` ties them to block 0's, so DiT-XL/2 has ~675 M parameters, not ~750 M, and
Difffit trains one class table (SPEC.md section 1). diffusers' timestep embedding also divides the
frequency exponent by 127 where the original divides by 128; `share_embedders` restores the original.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings
from torch import nn


@dataclass(frozen=True)
class DiTSize:
    depth: int
    hidden: int
    heads: int
    patch: int


# DiT paper, Table 1 (S, B, L, XL), and a CPU-sized tiny one for small images.
_SIZES = {"tiny": (4, 128, 4), "s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}
PRESETS: dict[str, DiTSize] = {
    f"dit-{name}/{patch}": DiTSize(depth, hidden, heads, patch)
    for name, (depth, hidden, heads) in _SIZES.items()
    for patch in (2, 4, 8)
}
PRESETS["dit-tiny"] = PRESETS["dit-tiny/2"]


def preset(name: str) -> DiTSize:
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def dit_kwargs(size: DiTSize, sample_size: int, in_channels: int, num_classes: int) -> dict:
    """DiTTransformer2DModel arguments for a preset on latents (in_channels, sample_size, sample_size)."""
    if sample_size % size.patch:
        raise ValueError(f"latent size {sample_size} is not divisible by the patch size {size.patch}")
    return dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=2 * in_channels,  # learned sigma: eps and variance
        patch_size=size.patch,
        num_layers=size.depth,
        num_attention_heads=size.heads,
        attention_head_dim=size.hidden // size.heads,
        num_embeds_ada_norm=num_classes,  # the table gets one more row: the null class
        norm_eps=1e-6,  # the original DiT's LayerNorms
    )


def share_embedders(dit: DiTTransformer2DModel, check_equal: bool = True) -> DiTTransformer2DModel:
    """Tie every block's timestep MLP and class table to block 0's, as in the original DiT (in place).

    With check_equal, refuse a model whose copies differ: tying would change what it computes.
    """
    shared = dit.transformer_blocks[0].norm1.emb
    for i, block in enumerate(dit.transformer_blocks[1:], start=1):
        if check_equal and not _same_params(block.norm1.emb, shared):
            raise ValueError(
                f"block {i}'s timestep/class embedder differs from block 0's; rdistill shares one embedder "
                "across blocks (as the original DiT does), so this checkpoint cannot be loaded faithfully"
            )
        block.norm1.emb = shared
    shared.time_proj.downscale_freq_shift = 0  # the original DiT: exponent / 128, not / 127
    shared.class_embedder.dropout_prob = 0.0  # label dropout is the trainer's, with a seeded generator
    return dit


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys():
        return False
    return all(p.device.type == "meta" or torch.equal(p, pb[k]) for k, p in pa.items())


def build_dit(name: str, sample_size: int, in_channels: int, num_classes: int,
              device: str | torch.device = "cpu") -> DiTTransformer2DModel:
    """A DiT of a preset with shared embedders; on device "meta" it allocates nothing."""
    with torch.device(device):
        dit = DiTTransformer2DModel(**dit_kwargs(preset(name), sample_size, in_channels, num_classes))
    return share_embedders(dit, check_equal=False)


def init_dit_(dit: DiTTransformer2DModel, seed: int) -> DiTTransformer2DModel:
    """The DiT paper's initialisation for training from scratch (in place).

    Xavier-uniform linears with zero biases, N(0, 0.02) class table and timestep MLP, zero adaLN
    modulations and output projection, so every block starts as the identity.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in dit.modules():
            if isinstance(module, nn.Linear):
                bound = (6.0 / (module.in_features + module.out_features)) ** 0.5
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) * 2 * bound - bound)
                module.bias.zero_()
        w = dit.pos_embed.proj.weight  # patch embedding, as a linear layer
        bound = (6.0 / (w[0].numel() + w.shape[0])) ** 0.5
        w.copy_(torch.rand(w.shape, generator=g) * 2 * bound - bound)
        dit.pos_embed.proj.bias.zero_()
        emb = dit.transformer_blocks[0].norm1.emb
        for p in (emb.class_embedder.embedding_table.weight, emb.timestep_embedder.linear_1.weight,
                  emb.timestep_embedder.linear_2.weight):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        for block in dit.transformer_blocks:
            block.norm1.linear.weight.zero_()
            block.norm1.linear.bias.zero_()
        for layer in (dit.proj_out_1, dit.proj_out_2):
            layer.weight.zero_()
            layer.bias.zero_()
    return dit


def load_diffusers_folder(path: str | Path) -> DiTTransformer2DModel:
    """A DiT saved by diffusers (`save_pretrained`, or a pipeline folder with `transformer/`)."""
    path = Path(path)
    if (path / "transformer" / "config.json").exists():
        path = path / "transformer"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no diffusers DiT (no config.json)")
    return share_embedders(DiTTransformer2DModel.from_pretrained(path, low_cpu_mem_usage=False))


def num_classes_of(dit: DiTTransformer2DModel) -> int:
    return dit.config.num_embeds_ada_norm


def architecture(dit: DiTTransformer2DModel) -> dict:
    """The constructor arguments that rebuild this DiT (saved with every run)."""
    return {k: v for k, v in dict(dit.config).items() if not k.startswith("_")}


def from_architecture(arch: dict, device: str | torch.device = "cpu") -> DiTTransformer2DModel:
    with torch.device(device):
        dit = DiTTransformer2DModel(**arch)
    return share_embedders(dit, check_equal=False)


def autocast(device: torch.device, precision: str):
    """The context a forward runs in: bf16 autocast (CUDA or CPU) for "bf16", nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


# --- A faster forward, computing the same thing ---------------------------------------------------------
#
# diffusers calls the timestep/class embedder in every block (norm1.emb) and again for the output: depth + 1
# calls per forward where rdistill's tied embedder needs one. `fast_forward_` memoises each embedder for the
# duration of one forward of its DiT (the memo is dropped when the forward ends, so no graph or stale value
# outlives it). It also makes every row of the output independent of how many rows share the batch: CPU
# matrix kernels round a product of a few rows (and a few-image convolution) differently from larger ones
# (measured, torch 2.14 CPU: fewer than 4 rows on earlier machines, fewer than 8 on an AVX-512/AMX Xeon), so
# those few-row calls are padded to MIN_ROWS. With it, an image sampled alone or in any batch is bit-identical
# (see rdistill.generate.sampler), and no image has to be padded.

MIN_ROWS = 8  # fewest rows whose CPU product rounds like any larger batch's, on every CPU measured


class _MemoEmbeddings(CombinedTimestepLabelEmbeddings):
    """The timestep + class embedder, computed once per (timestep, labels) pair while its DiT's forward runs."""

    def forward(self, timestep, class_labels, hidden_dtype=None):
        memo = self.__dict__.get("_memo")
        if memo and memo[0] is timestep and memo[1] is class_labels and memo[2] == hidden_dtype:
            return memo[3]
        out = super().forward(timestep, class_labels, hidden_dtype=hidden_dtype)  # (N, D)
        if memo is not None:  # inside a DiT forward
            self.__dict__["_memo"] = (timestep, class_labels, hidden_dtype, out)
        return out


class _RowStableLinear(nn.Linear):
    """nn.Linear whose output rows do not depend on how many rows it gets (fewer than MIN_ROWS are padded)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        if 0 < rows < MIN_ROWS:
            flat = F.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, MIN_ROWS - rows))  # (MIN_ROWS, K)
            return F.linear(flat, self.weight, self.bias)[:rows].reshape(*x.shape[:-1], -1)
        return F.linear(x, self.weight, self.bias)


class _RowStableConv2d(nn.Conv2d):
    """nn.Conv2d (the patch embedding) whose output images do not depend on the batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if x.dim() == 4 and 0 < n < MIN_ROWS:
            return super().forward(torch.cat([x, x[:1].expand(MIN_ROWS - n, *x.shape[1:])]))[:n]
        return super().forward(x)


def _memo_on(dit, args):
    for emb in dit._rdistill_embedders:
        emb.__dict__["_memo"] = ()


def _memo_off(dit, args, output):
    for emb in dit._rdistill_embedders:
        emb.__dict__["_memo"] = None


def fast_forward_(dit: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """Compute the conditioning once per forward and make output rows batch-independent (in place, idempotent).

    Parameters, state dict, config and results (bit for bit at 4 or more images per forward) are unchanged."""
    if getattr(dit, "_rdistill_embedders", None) is not None:
        return dit
    embedders = []
    for m in dit.modules():
        if type(m) is CombinedTimestepLabelEmbeddings:
            m.__class__ = _MemoEmbeddings
        if type(m) is _MemoEmbeddings and all(m is not e for e in embedders):
            embedders.append(m)
        elif type(m) is nn.Linear:
            m.__class__ = _RowStableLinear
        elif type(m) is nn.Conv2d:
            m.__class__ = _RowStableConv2d
    dit._rdistill_embedders = embedders
    dit.register_forward_pre_hook(_memo_on)
    dit.register_forward_hook(_memo_off, always_call=True)
    return dit


class DiTCall:
    """The interface the loss and the sampler share: `model(x, t, y) -> (N, 2C, H, W)` for a diffusers
    DiTTransformer2DModel (or a DDP wrapper of one), x (N, C, H, W), t (N,) timesteps, y (N,) labels.
    Carries the model's device, dtype and training flag (the sampler refuses training mode).
    The DiT gets `fast_forward_` (same results; one conditioning embedding per forward). `compile`: run it
    through torch.compile (True: the default inductor backend; a string names another backend)."""

    def __init__(self, dit: torch.nn.Module, compile: bool | str = False):
        self.module = dit
        base = getattr(dit, "module", dit)  # under DDP, the DiT itself
        if isinstance(base, DiTTransformer2DModel):
            fast_forward_(base)
        if compile:
            dit = torch.compile(dit) if compile is True else torch.compile(dit, backend=compile)
        self.dit = dit

    device = property(lambda self: next(self.module.parameters()).device)
    dtype = property(lambda self: next(self.module.parameters()).dtype)
    training = property(lambda self: self.module.training)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.dit(x, timestep=t, class_labels=y).sample


def dit_callable(dit: torch.nn.Module, compile: bool | str = False) -> DiTCall:
    """`model(x, t, y) -> out` over a DiT (see DiTCall)."""
    return DiTCall(dit, compile)


__all__ = ["PRESETS", "DiTSize", "preset", "dit_kwargs", "build_dit", "share_embedders", "init_dit_",
           "load_diffusers_folder", "architecture", "from_architecture", "DiTCall", "dit_callable", "fast_forward_",
           "autocast", "MIN_ROWS"]
