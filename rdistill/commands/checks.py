"""What every command checks before its first expensive step: devices, datasets and their image size, run
folders and checkpoints, base weights, surrogate sets, output folders.

Each check raises ValueError or FileNotFoundError with one line that names the offending value and says
what to do; `rdistill.cli` prints it and exits 2. Defaults chosen from the input (a folder's image size, a
base model's) are said on stderr, so a user sees what was picked. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import sys
from pathlib import Path

_IMAGEFOLDER = "imagefolder:"


def note(message: str) -> None:
    """A default chosen for the user, said once on stderr (stdout keeps the command's result)."""
    print(f"rdistill: {message}", file=sys.stderr)


def device(name: str, flag: str = "--device") -> None:
    """A device the machine has: auto, cpu, or a CUDA device where CUDA is available."""
    from rdistill.common.devices import resolve_device

    try:
        resolve_device(name)
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None


def at_least(flag: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ValueError(f"{flag} {value} is invalid: expected >= {low}")


def dataset_image_size(name: str, image_size: int | None, root: str | None = None) -> int | None:
    """The image size to load `name` at: `image_size` if given; for imagefolder:PATH the folder's own size
    (said on stderr); else None (the dataset's native size). A folder that is missing raises here."""
    if not name.startswith(_IMAGEFOLDER):
        if root is not None and not Path(root).exists():
            raise FileNotFoundError(f"dataset root {root} does not exist: pass --root <the dataset's folder>")
        return image_size
    path = Path(name[len(_IMAGEFOLDER):])
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {path} does not exist: pass --dataset imagefolder:<a folder of "
                                "class subfolders>")
    if image_size is not None:
        return image_size
    from rdistill.data.files import common_size
    from rdistill.data.sources import FOLDER_IMAGE_SIZE, folder_files

    files = folder_files(path)
    size = common_size(files)
    if size is None:
        note(f"{name}: images of several sizes; reading them at {FOLDER_IMAGE_SIZE}x{FOLDER_IMAGE_SIZE} "
             "(center crop; --image-size to change)")
        return FOLDER_IMAGE_SIZE
    note(f"{name}: all {len(files)} images share one size; reading them at {size}x{size} (--image-size to change)")
    return size


def base_image_size(init: str, codec: str) -> int | None:
    """The image side a base model was trained at (an rdistill run, or a diffusers folder's sample size),
    or None where the base does not say (an original .pt)."""
    import json

    from rdistill.models.loading import kind_of

    kind = kind_of(init)  # FileNotFoundError naming what it is not
    if kind == "run":
        from rdistill.config import read_config
        from rdistill.generate.checkpoint import RunMeta

        meta = RunMeta.load(init)
        cfg = read_config(Path(init) / "config.yaml")
        down = 1 if meta.codec == "pixel" else 8  # the SD VAE halves three times
        return cfg.data.image_size or meta.latent_shape[1] * down
    if kind == "diffusers":
        from rdistill.models.loading import check_diffusers_weights

        check_diffusers_weights(init)
        folder = Path(init) / "transformer" if (Path(init) / "transformer" / "config.json").exists() else Path(init)
        sample = json.loads((folder / "config.json").read_text()).get("sample_size")
        return int(sample) * (1 if codec == "pixel" else 8) if sample else None
    return None


def run_folder(path: str) -> Path:
    """A training run ready to sample: model.json, config.yaml and a newest checkpoint holding its EMA.
    A run in storage (a URI) is checked on this node's copy of it."""
    from rdistill import storage
    from rdistill.generate.checkpoint import RunMeta, check_checkpoint, latest_checkpoint

    p = Path(storage.local_copy(path))
    if not p.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist: pass --run <the --out of a pretrain or finetune>")
    RunMeta.load(p)  # FileNotFoundError: not a run folder
    if not (p / "config.yaml").is_file():
        raise FileNotFoundError(f"run folder {path} has no config.yaml: it is not a complete rdistill run")
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise FileNotFoundError(f"run {path} has no complete checkpoint under checkpoints/: train it first")
    return check_checkpoint(ckpt, ("ema.safetensors",))


def under_ray_job() -> bool:
    """Whether this process is the driver of a `ray job submit` job (Ray sets these for job drivers only)."""
    import os

    return bool(os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def output_folder(path: str, flag: str = "--out") -> None:
    """A folder to write into: it may exist, but not as a file. A storage URI must be writable (checked
    now, before any work); under `ray job submit` a relative path (the job's temporary folder) is refused."""
    from rdistill import storage

    if storage.is_uri(path):
        storage.check_writable(path)
        return
    if under_ray_job() and not Path(path).is_absolute():
        raise ValueError(f"{flag} {path} is a relative path under `ray job submit`: it would land in the job's "
                         f"temporary working folder on the head and be lost; give storage every node reaches, "
                         f"e.g. {flag} s3://bucket/{path.strip('./')}")
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder: choose another {flag}")


def surrogate_sets(folders) -> None:
    """Each folder holds a surrogate set (its manifest)."""
    from rdistill.data.shards import MANIFEST_NAME

    from rdistill import storage

    for f in folders:
        if not storage.exists(storage.join(f, MANIFEST_NAME)):
            raise FileNotFoundError(f"{f} is not a surrogate set (no {MANIFEST_NAME}): pass a folder written by "
                                    "`rdistill sample` or `rdistill select`")


def existing_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path} is not a file")


def imagenet_root(root: str, wnids) -> None:
    """An ImageNet root holding train/<wnid>/ and val/<wnid>/ for every one of `wnids`; the missing ones listed."""
    from rdistill.data.imagenet import class_name

    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"ImageNet root {root} does not exist: pass the folder holding train/ and val/")
    for split in ("train", "val"):
        if not (r / split).is_dir():
            hint = " (sort the 50 000 val images into val/<wnid>/ folders)" if split == "val" else ""
            raise FileNotFoundError(f"ImageNet root {root} has no {split}/ folder{hint}")
    for split in ("train", "val"):
        have = {e.name for e in (r / split).iterdir() if e.is_dir()}
        missing = [w for w in wnids if w not in have]
        if missing:
            shown = ", ".join(f"{w} ({class_name(w)})" for w in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise ValueError(f"ImageNet root {root}: {split}/ misses {len(missing)} of {len(wnids)} classes: "
                             f"{shown}{more}")


def dit_checkpoint(path: str, preset_name: str) -> None:
    """A DiT (diffusers folder or original .pt) of the preset's size; loads it (what the job would load)."""
    from rdistill.models.loading import load_base

    load_base(path, preset_name)  # ValueError naming depth / width / patch when the size differs


def vae_folder(path: str) -> None:
    """A diffusers AutoencoderKL folder (or a pipeline folder whose vae/ holds one)."""
    import json

    p = Path(path)
    cfg = next((c for c in (p / "config.json", p / "vae" / "config.json") if c.is_file()), None)
    if cfg is None:
        raise FileNotFoundError(f"VAE folder {path} has no config.json (nor vae/config.json): pass a diffusers "
                                "AutoencoderKL folder such as stabilityai/sd-vae-ft-ema")
    kind = json.loads(cfg.read_text()).get("_class_name")
    if kind != "AutoencoderKL":
        raise ValueError(f"{cfg} describes a {kind}, not an AutoencoderKL: pass the VAE folder (e.g. sd-vae-ft-ema)")


def teacher_file(path: str, num_classes: int) -> None:
    """A torchvision / timm ResNet-18 state_dict for `num_classes` classes."""
    import torch

    from rdistill.evaluate.cells import check_teacher

    existing_file(path, "--teacher")
    check_teacher(torch.load(path, map_location="cpu", weights_only=True), num_classes, path)
