"""Convert the original DiT checkpoint (facebookresearch/DiT, e.g. `DiT-XL-2-256x256.pt`) to diffusers.

The original is a plain state_dict of the reference `DiT` module; diffusers' `DiTTransformer2DModel`
differs in layout (SPEC.md section 1): q, k, v are three projections instead of one fused qkv, and each
block's `norm1.emb` holds its own timestep MLP and class table, so all copies get the same weights.
diffusers divides the timestep frequencies by 127 where the original divides by 128: a converted model
matches the original only once every block's `norm1.emb.time_proj.downscale_freq_shift` is 0.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel
from diffusers.models.embeddings import get_2d_sincos_pos_embed

# Heads by hidden size of the official sizes (DiT paper, Table 1): XL, L, B, S.
DIT_HEADS = {1152: 16, 1024: 16, 768: 12, 384: 6}
NORM_EPS = 1e-6  # every LayerNorm of the original DiT; diffusers defaults the MLP norm to 1e-5
POS_EMBED_ATOL = 1e-5

_BLOCK_RENAMES = {  # original name inside `blocks.i.` -> diffusers name inside `transformer_blocks.i.`
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm1.linear",
}
_BLOCK_KEYS = [f"{m}.{p}" for m in ["attn.qkv", *_BLOCK_RENAMES] for p in ("weight", "bias")]
_SHARED_RENAMES = {  # original -> diffusers name inside each block's `norm1.emb.`
    "t_embedder.mlp.0.weight": "timestep_embedder.linear_1.weight",
    "t_embedder.mlp.0.bias": "timestep_embedder.linear_1.bias",
    "t_embedder.mlp.2.weight": "timestep_embedder.linear_2.weight",
    "t_embedder.mlp.2.bias": "timestep_embedder.linear_2.bias",
    "y_embedder.embedding_table.weight": "class_embedder.embedding_table.weight",
}
_TOP_RENAMES = {"x_embedder.proj": "pos_embed.proj", "final_layer.adaLN_modulation.1": "proj_out_1",
                "final_layer.linear": "proj_out_2"}
_TOP_KEYS = ["pos_embed", *_SHARED_RENAMES, *(f"{m}.{p}" for m in _TOP_RENAMES for p in ("weight", "bias"))]


def _name_keys(keys: set[str], limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def infer_original_config(state_dict: dict) -> dict:
    """Sizes of an original DiT from its state_dict; ValueError naming missing or unexpected keys."""
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else 0
    expected = set(_TOP_KEYS) | {f"blocks.{i}.{k}" for i in range(depth) for k in _BLOCK_KEYS}
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected or depth == 0:
        raise ValueError(f"not an original DiT state_dict: missing keys [{_name_keys(missing)}], "
                         f"unexpected keys [{_name_keys(unexpected)}], {depth} blocks")
    hidden, in_channels, patch, _ = state_dict["x_embedder.proj.weight"].shape  # (D, C, p, p)
    tokens = state_dict["pos_embed"].shape[1]  # (1, T, D)
    grid = round(tokens**0.5)
    out_features = state_dict["final_layer.linear.weight"].shape[0]  # p * p * out_channels
    if grid * grid != tokens or out_features % (patch * patch):
        raise ValueError(f"pos_embed has {tokens} tokens and final_layer {out_features} outputs: "
                         f"need a square grid and a multiple of patch^2 = {patch * patch}")
    return {"depth": depth, "hidden_size": hidden, "patch_size": patch, "in_channels": in_channels,
            "out_channels": out_features // (patch * patch),
            "num_classes": state_dict["y_embedder.embedding_table.weight"].shape[0] - 1,  # + null class
            "sample_size": grid * patch}


def convert_original_state_dict(state_dict: dict, num_heads: int | None = None) -> tuple[dict, dict]:
    """(DiTTransformer2DModel kwargs, its state_dict) for an original DiT state_dict."""
    cfg = infer_original_config(state_dict)
    hidden = cfg["hidden_size"]
    num_heads = DIT_HEADS.get(hidden) if num_heads is None else num_heads
    if num_heads is None or num_heads <= 0 or hidden % num_heads:
        raise ValueError(f"num_heads={num_heads} for hidden size {hidden}: pass a positive divisor "
                         f"(known sizes: {DIT_HEADS})")
    grid = cfg["sample_size"] // cfg["patch_size"]
    expected_pos = get_2d_sincos_pos_embed(hidden, grid, base_size=grid, output_type="pt")  # (T, D)
    diff = (state_dict["pos_embed"][0].float() - expected_pos).abs().max().item()
    if diff > POS_EMBED_ATOL:
        raise ValueError(f"pos_embed differs from diffusers' fixed sin-cos embedding by {diff:.3g} "
                         f"(> {POS_EMBED_ATOL}): not a fixed-pos-embed DiT")
    config = dict(num_attention_heads=num_heads, attention_head_dim=hidden // num_heads,
                  in_channels=cfg["in_channels"], out_channels=cfg["out_channels"],
                  num_layers=cfg["depth"], sample_size=cfg["sample_size"], patch_size=cfg["patch_size"],
                  num_embeds_ada_norm=cfg["num_classes"], norm_eps=NORM_EPS)

    new = {}
    for old, name in _TOP_RENAMES.items():
        for p in ("weight", "bias"):
            new[f"{name}.{p}"] = state_dict[f"{old}.{p}"]
    for i in range(cfg["depth"]):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        for p in ("weight", "bias"):
            q, k, v = state_dict[f"{src}attn.qkv.{p}"].chunk(3, dim=0)  # (3D, ...) in q, k, v order
            new.update({f"{dst}attn1.to_q.{p}": q, f"{dst}attn1.to_k.{p}": k, f"{dst}attn1.to_v.{p}": v})
            for old, name in _BLOCK_RENAMES.items():
                new[f"{dst}{name}.{p}"] = state_dict[f"{src}{old}.{p}"]
        for old, name in _SHARED_RENAMES.items():  # every block gets its own copy
            new[f"{dst}norm1.emb.{name}"] = state_dict[old]
    return config, new


def _unwrap(obj: object, path: Path) -> dict:
    """The model state_dict inside a loaded file: plain, or a DiT training checkpoint (EMA preferred)."""
    if isinstance(obj, dict) and "pos_embed" not in obj:
        for key in ("ema", "model"):  # DiT's train.py saves {"model", "ema", "opt", "args"}
            if isinstance(obj.get(key), dict):
                return obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a DiT state_dict "
                         f"(nor a dict with one under 'ema' or 'model')")
    return obj


def read_original_checkpoint(path: str | Path) -> dict:
    """The original-layout state_dict in a DiT `.pt` (plain, or a training checkpoint: EMA preferred)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no DiT checkpoint at {path}")
    try:  # training checkpoints pickle their argparse.Namespace under "args"
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a loadable torch checkpoint: {e}") from e
    return _unwrap(obj, path)


def model_from_original(state_dict: dict, num_heads: int | None = None) -> DiTTransformer2DModel:
    """A DiTTransformer2DModel (eval mode) from an original-layout state_dict; timestep fix NOT applied."""
    config, new_state_dict = convert_original_state_dict(state_dict, num_heads)
    model = DiTTransformer2DModel(**config)
    model.load_state_dict(new_state_dict, strict=True)
    return model.eval()


def load_original_checkpoint(path: str | Path, num_heads: int | None = None) -> DiTTransformer2DModel:
    """A DiTTransformer2DModel (eval mode) from an original DiT `.pt`; timestep fix NOT applied."""
    return model_from_original(read_original_checkpoint(path), num_heads)
