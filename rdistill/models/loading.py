"""Find and load a DiT from what a user points at: an rdistill run, a diffusers folder, an original .pt."""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel

from rdistill.generate.checkpoint import RunMeta, check_checkpoint, latest_checkpoint
from rdistill.models.difffit import apply_difffit
from rdistill.models.dit import DiTSize, from_architecture, load_diffusers_folder, preset, share_embedders


def kind_of(path: str | Path) -> str:
    """'run', 'diffusers' or 'original' for a base-weights path; FileNotFoundError otherwise."""
    path = Path(path)
    if (path / "model.json").exists():
        return "run"
    if (path / "config.json").exists() or (path / "transformer" / "config.json").exists():
        return "diffusers"
    if path.is_file():
        return "original"
    raise FileNotFoundError(
        f"{path} is neither an rdistill run folder (model.json), a diffusers DiT folder (config.json) "
        "nor an original DiT checkpoint file (.pt)"
    )


def load_base(path: str | Path, size_name: str | None = None, num_heads: int | None = None) -> DiTTransformer2DModel:
    """The DiT at `path`, with shared embedders; checked against the preset `size_name` if given.

    An original `.pt` has no head count: it comes from `size_name`, `num_heads` or the width.
    """
    kind = kind_of(path)
    size = preset(size_name) if size_name else None
    if kind == "run":
        dit, _ = load_run(path)
    elif kind == "diffusers":
        check_diffusers_weights(path)
        dit = load_diffusers_folder(path)
    else:
        from rdistill.models.convert import infer_original_config, model_from_original, read_original_checkpoint

        with plain_state_dict(path):
            state_dict = read_original_checkpoint(path)
        c = infer_original_config(state_dict)
        if size and (c["depth"], c["hidden_size"], c["patch_size"]) != (size.depth, size.hidden, size.patch):
            raise ValueError(f"{path} holds a DiT of another size than {size_name}: depth {c['depth']}, "
                             f"width {c['hidden_size']}, patch {c['patch_size']} instead of {size}")
        dit = share_embedders(model_from_original(state_dict, num_heads or (size.heads if size else None)))
    if size is not None:
        check_size(dit, size, size_name, path)
    return dit


# The weight files `from_pretrained` looks for in a diffusers model folder (sharded ones have an index).
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin",
                     "diffusion_pytorch_model*.index.json")


def check_diffusers_weights(path: str | Path) -> None:
    """A diffusers DiT folder must hold its weights, not only config.json; FileNotFoundError naming it."""
    folder = Path(path) / "transformer" if (Path(path) / "transformer" / "config.json").exists() else Path(path)
    if not any(any(folder.glob(pattern)) for pattern in DIFFUSERS_WEIGHTS):
        raise FileNotFoundError(f"diffusers folder {folder} has config.json but no weights "
                                "(diffusion_pytorch_model.safetensors): copy them in, or rerun save_pretrained")


@contextmanager
def plain_state_dict(path: str | Path):
    """Turn torch's paragraph about weights_only into one line: the file is a pickled object, not tensors."""
    try:
        yield
    except ValueError as e:
        if not isinstance(e.__cause__, pickle.UnpicklingError):
            raise
        raise ValueError(f"{path} is not a plain state_dict (it pickles other Python objects, which "
                         "torch.load(weights_only=True) refuses): in the code that made it, save "
                         "torch.save(model.state_dict(), 'weights.pt') and pass that file") from None


def check_size(dit: DiTTransformer2DModel, size: DiTSize, name: str, path) -> None:
    c = dit.config
    got = DiTSize(c.num_layers, c.num_attention_heads * c.attention_head_dim, c.num_attention_heads, c.patch_size)
    if got != size:
        raise ValueError(f"{path} holds a DiT of another size than {name}: {got} instead of {size}")


def load_run(run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu"):
    """(dit, meta) of a training run's newest checkpoint; weights "ema" (for sampling) or "live"."""
    meta = RunMeta.load(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"run {run_dir} has no complete checkpoint under checkpoints/")
    heads = meta.architecture["num_attention_heads"]
    dit = load_base(meta.init, num_heads=heads) if meta.init else from_architecture(meta.architecture)
    if meta.peft == "difffit":
        apply_difffit(dit)
    from safetensors.torch import load_file

    name = "ema.safetensors" if weights == "ema" else "trainable.safetensors"
    state = load_file(check_checkpoint(ckpt, (name,)) / name)
    load_named(dit, state)
    return dit.to(device).eval(), meta


def load_named(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's parameters of those names; every name must exist."""
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"checkpoint has parameters the model lacks (another model size?): {unknown[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)} != model {tuple(params[name].shape)}")
            params[name].copy_(value)
