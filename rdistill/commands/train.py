"""`rdistill pretrain` and `rdistill finetune`: training runs from a config, flags and key=value overrides."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rdistill.commands import checks
from rdistill.commands.ray_args import add_ray_args, parse_resources

# Flags of the training commands and the config keys they set.
TRAIN_FLAGS = {
    "dataset": ("data.name", str, "dataset: digits, fashion-mnist, imagefolder:PATH, imagewoof, imagenette, imageidc, imagenet1k"),
    "root": ("data.root", str, "the dataset's folder (ImageNet root with train/ and val/, Fashion-MNIST IDX folder)"),
    "image_size": ("data.image_size", int, "image side in pixels (default: the dataset's native size)"),
    "codec": ("data.codec", str, "'pixel' (small images) or 'vae:PATH' (a local SD AutoencoderKL folder)"),
    "preset": ("model.preset", str, "DiT size: dit-tiny, dit-s/2, dit-b/2, dit-l/2, dit-xl/2 (also /4, /8)"),
    "init": ("model.init", str, "base weights: an rdistill run folder, a diffusers DiT folder or an original DiT .pt"),
    "method": ("train.method", str, "minimax (default), difffit (no criteria) or pretrain"),
    "lambda_r": ("train.lambda_r", float, "weight of the representativeness criterion (paper: 0.002)"),
    "lambda_d": ("train.lambda_d", float, "weight of the diversity criterion (paper: 0.008)"),
    "memory_size": ("train.memory_size", int, "N_M, entries per class memory (paper: 64)"),
    "epochs": ("train.epochs", int, "passes over the training split (paper: 8)"),
    "max_steps": ("train.max_steps", int, "stop after this many steps (quick runs)"),
    "batch_size": ("train.batch_size", int, "global batch size (paper: 8)"),
    "lr": ("train.lr", float, "AdamW learning rate (paper: 1e-3)"),
    "seed": ("train.seed", int, "seed of every random draw of the run"),
    "device": ("train.device", str, "auto, cpu, cuda or cuda:N"),
    "out": ("out", str, "the run folder (checkpoints, config, losses); an existing run is resumed"),
}

# Where `rdistill pretrain` starts before the config file and flags: training a small DiT from scratch.
PRETRAIN_BASE = [
    "train.method=pretrain",
    "train.batch_size=64",  # 21 steps per epoch on digits
    "train.lr=0.001",
    "train.epochs=300",  # ~6,300 steps on digits; 120 epochs at lr 5e-4 gave visibly noisy digits
    "train.ema_decay=0.999",  # 0.9999 needs far more steps than a small from-scratch run takes
    "train.ckpt_every=1000",
    "out=runs/pretrain",
]
FINETUNE_BASE = [
    "model.init=runs/pretrain",  # where `rdistill pretrain` writes by default
    "out=runs/finetune",
]



def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train a class-conditional DiT from scratch (all parameters)",
                       description="Train a DiT from scratch on a dataset: the base model that small datasets "
                                   "lack. Defaults: " + ", ".join(PRETRAIN_BASE))
    add_train_args(p)
    p.set_defaults(handler=run_train, base=PRETRAIN_BASE)

    p = sub.add_parser("finetune", help="fine-tune a base DiT with Difffit and the minimax criteria",
                       description="Fine-tune a base DiT (Difffit) with the minimax representativeness and "
                                   "diversity criteria (method minimax) or without them (method difffit).")
    add_train_args(p)
    p.set_defaults(handler=run_train, base=FINETUNE_BASE)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML run configuration (sections data, model, train; key out)")
    for name, (key, type_, help_) in TRAIN_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type_, help=f"{help_} [{key}]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=0,
                   help="Ray Train workers (DDP); 0 (default) trains in this process. A --out in storage "
                        "(s3://...) trains on Ray Train too")
    add_ray_args(p)
    p.add_argument("--cpus-per-worker", type=float, default=0.9, help="CPUs each Train worker requests (default 0.9)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any config key, e.g. train.ema_decay=0.999")


def resolve_config(args):
    from rdistill.config import load_config

    flags = [f"{key}={getattr(args, name)}" for name, (key, _, _) in TRAIN_FLAGS.items()
             if getattr(args, name) is not None]
    base = load_config(None, args.base)
    return load_config(args.config, flags + args.overrides, base=base)


def check_train(cfg):
    """The config with its image size resolved (the base's, else a folder's own); errors before any work."""
    checks.device(cfg.train.device, "--device (train.device)")
    if cfg.data.codec.startswith("vae:") and not Path(cfg.data.codec[4:]).is_dir():
        raise FileNotFoundError(f"--codec {cfg.data.codec}: no folder {cfg.data.codec[4:]} (a diffusers "
                                "AutoencoderKL folder, e.g. sd-vae-ft-ema)")
    from rdistill import storage

    size = cfg.data.image_size
    if cfg.model.init:
        init = storage.local_copy(cfg.model.init)  # a base in storage: this node's copy
        if not Path(init).exists():
            raise FileNotFoundError(f"no base model at {cfg.model.init}: train one with `rdistill pretrain --out "
                                    f"{cfg.model.init}` or point --init at one")
        base = checks.base_image_size(init, cfg.data.codec)
        if size is None and base is not None and cfg.data.name.startswith("imagefolder:"):
            checks.note(f"image size {base}, the size base {cfg.model.init} was trained at (--image-size to change)")
            size = base
        elif size is not None and base is not None and size != base:
            raise ValueError(f"--image-size {size}, but base {cfg.model.init} was trained at {base}: pass "
                             f"--image-size {base} or a base trained at {size}")
    size = checks.dataset_image_size(cfg.data.name, size, cfg.data.root)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=size))


def run_train(args) -> None:
    cfg = resolve_config(args)
    if args.command == "finetune" and cfg.train.method == "pretrain":
        raise ValueError("finetune takes --method minimax or difffit; use `rdistill pretrain` to train from scratch")
    if args.command == "finetune" and not cfg.model.init:
        raise ValueError("finetune needs a base model: pass --init <run folder, diffusers folder or DiT .pt>")
    cfg = check_train(cfg)
    checks.output_folder(cfg.out)
    checks.at_least("--workers", args.workers, 0)
    from rdistill import storage

    if args.workers == 0 and not storage.is_uri(cfg.out) and args.address is None:
        from rdistill.generate.finetune import train

        run_dir = train(cfg, progress=not args.no_progress)
        print(f"run folder: {run_dir}")
        return
    from rdistill.distributed.cluster import connect
    from rdistill.distributed.train_ray import fit_ray

    check_stored_run(cfg)
    connect(args.address)
    result = fit_ray(cfg, num_workers=max(1, args.workers), gpus_per_worker=args.gpus_per_worker,
                     cpus_per_worker=args.cpus_per_worker,
                     worker_resources=parse_resources(args.worker_resources), progress=not args.no_progress)
    if result.error is not None:
        raise result.error
    print(f"run folder: {cfg.out} (step {result.metrics.get('step')}, {max(1, args.workers)} Ray Train workers)")


def check_stored_run(cfg) -> None:
    """A run at a storage URI: refuse a location holding another run's files; one of the same config resumes.
    The run's config is recorded there before any work (config.yaml; the folder is finished by `_COMPLETE`)."""
    from rdistill import storage
    import yaml

    from rdistill.config import from_dict, parse_yaml, to_dict
    from rdistill.generate.finetune import check_same_run

    if not storage.is_uri(cfg.out):
        return
    where = storage.join(cfg.out, "config.yaml")
    if storage.exists(where):
        check_same_run(cfg, from_dict(parse_yaml(storage.read_text(where), where)), cfg.out)
        return
    others = storage.list_files(cfg.out)
    if others:
        raise ValueError(f"{cfg.out} holds files that are not an rdistill run's (e.g. {others[0]}); choose "
                         "another --out or delete them")
    storage.write_text(where, yaml.safe_dump(to_dict(cfg), sort_keys=False))
