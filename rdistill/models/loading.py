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


def base_pin(path: str | Path, run_dir: str | Path | None = None) -> dict:
    """The exact weights a run fine-tunes: {path, checkpoint, sha256}. `checkpoint` is the base run's newest
    checkpoint folder (None for a diffusers folder or a .pt), `sha256` the first 16 hex digits of the
    weight files' hash. A run folder that already pins its base (a resumed run) keeps that pin."""
    if run_dir is not None and (Path(run_dir) / "model.json").is_file():
        pinned = RunMeta.load(run_dir).base
        if pinned is not None:
            return pinned
    path = Path(path).resolve()
    checkpoint = None
    if kind_of(path) == "run":
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise FileNotFoundError(f"base run {path} has no complete checkpoint under checkpoints/: train it first")
        checkpoint = ckpt.name
    return {"path": str(path), "checkpoint": checkpoint, "sha256": _pin_hash(path, checkpoint)}


def _pin_hash(path: Path, checkpoint: str | None) -> str:
    """sha256 (16 hex) of the base weights: a run checkpoint's EMA, a diffusers folder's weight files, a .pt."""
    import hashlib

    from rdistill.generate.checkpoint import CKPT_DIR, weights_hash

    if checkpoint is not None:
        return weights_hash(path / CKPT_DIR / checkpoint)
    folder = path / "transformer" if (path / "transformer" / "config.json").exists() else path
    files = sorted(f for pattern in DIFFUSERS_WEIGHTS for f in folder.glob(pattern)) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:  # streamed: a DiT-XL/2 is 2.7 GB
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


def check_pin(pin: dict, run_dir) -> None:
    """The base a run pinned is still there, byte for byte; ValueError naming it and what to do otherwise."""
    from rdistill.generate.checkpoint import CKPT_DIR

    from rdistill import storage

    path, checkpoint = Path(storage.local_copy(pin["path"])), pin["checkpoint"]  # a URI: this node's copy
    where = path / CKPT_DIR / checkpoint if checkpoint else path
    if not where.exists():
        raise FileNotFoundError(f"run {run_dir} was trained from base {where}, which no longer exists (a base run "
                                "keeps its newest checkpoints only): restore it, or fine-tune again")
    got = _pin_hash(path, checkpoint)
    if got != pin["sha256"]:
        raise ValueError(f"run {run_dir} was trained from base {where} with sha256 {pin['sha256']}, it now holds "
                         f"{got}: restore those weights, or fine-tune again")


def load_base(path: str | Path, size_name: str | None = None, num_heads: int | None = None,
              pin: dict | None = None) -> DiTTransformer2DModel:
    """The DiT at `path`, with shared embedders; checked against the preset `size_name` if given.

    An original `.pt` has no head count: it comes from `size_name`, `num_heads` or the width. `pin`
    (base_pin) selects a base run's pinned checkpoint instead of its newest.
    """
    kind = kind_of(path)
    size = preset(size_name) if size_name else None
    if kind == "run":
        dit, _ = load_run(path, checkpoint=pin["checkpoint"] if pin else None)
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


def load_run(run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu",
             checkpoint: str | None = None):
    """(dit, meta) of a training run's newest checkpoint (or its folder `checkpoint`); weights "ema" (for
    sampling) or "live". A fine-tuned run's base is the one it pinned, checked by hash."""
    from rdistill.generate.checkpoint import CKPT_DIR

    meta = RunMeta.load(run_dir)
    ckpt = Path(run_dir) / CKPT_DIR / checkpoint if checkpoint else latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"run {run_dir} has no complete checkpoint under checkpoints/")
    heads = meta.architecture["num_attention_heads"]
    if meta.init and meta.base:
        check_pin(meta.base, run_dir)
    from rdistill import storage

    init = storage.local_copy(meta.init) if meta.init else None  # a base in storage: this node's copy
    dit = load_base(init, num_heads=heads, pin=meta.base) if init else from_architecture(meta.architecture)
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
