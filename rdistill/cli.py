"""The `rdistill` command: one sub-command per stage of the flow (DESIGN.md).

    rdistill pretrain --dataset digits                       # a base DiT for a small dataset
    rdistill finetune --dataset digits --init runs/digits-pretrain --method minimax
    rdistill info --model dit-xl/2 --peft difffit            # parameter counts, no weights loaded
    rdistill convert-dit --ckpt DiT-XL-2-256x256.pt --out dit-xl-2-256

Training commands take a YAML config (--config), flags for the common keys, and any config key as
`key=value` (e.g. train.lambda_r=0.004). Errors in the input are reported in one line, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    "train.lr=0.0005",
    "train.epochs=120",  # ~2,500 steps: a few minutes for dit-tiny on 2 CPU cores
    "train.ema_decay=0.999",  # 0.9999 needs far more steps than a small from-scratch run takes
    "train.ckpt_every=1000",
    "out=runs/pretrain",
]
FINETUNE_BASE = ["out=runs/finetune"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"rdistill {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdistill", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pretrain", help="train a class-conditional DiT from scratch (all parameters)",
                       description="Train a DiT from scratch on a dataset: the base model that small datasets "
                                   "lack. Defaults: " + ", ".join(PRETRAIN_BASE))
    add_train_args(p)
    p.set_defaults(run=run_train, base=PRETRAIN_BASE)

    p = sub.add_parser("finetune", help="fine-tune a base DiT with Difffit and the minimax criteria",
                       description="Fine-tune a base DiT (Difffit) with the minimax representativeness and "
                                   "diversity criteria (method minimax) or without them (method difffit).")
    add_train_args(p)
    p.set_defaults(run=run_train, base=FINETUNE_BASE)

    p = sub.add_parser("info", help="parameter counts of a DiT preset, without loading weights")
    p.add_argument("--model", default="dit-xl/2", help="DiT preset (default dit-xl/2)")
    p.add_argument("--peft", default="difffit", choices=["difffit", "full"], help="what trains (default difffit)")
    p.add_argument("--num-classes", type=int, default=1000, help="class labels (default 1000, ImageNet)")
    p.add_argument("--latent", default="4x32x32", help="latent shape CxHxW (default 4x32x32: 256px through the SD VAE)")
    p.set_defaults(run=run_info)

    p = sub.add_parser("convert-dit", help="convert an original DiT checkpoint (.pt) to a diffusers folder")
    p.add_argument("--ckpt", required=True, help="the original checkpoint, e.g. DiT-XL-2-256x256.pt")
    p.add_argument("--out", required=True, help="the diffusers folder to write")
    p.add_argument("--preset", default=None, help="DiT preset, for the number of heads (default: from the width)")
    p.set_defaults(run=run_convert)
    return parser


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML run configuration (sections data, model, train; key out)")
    for name, (key, type_, help_) in TRAIN_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type_, help=f"{help_} [{key}]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any config key, e.g. train.ema_decay=0.999")


def resolve_config(args):
    from rdistill.config import load_config

    flags = [f"{key}={getattr(args, name)}" for name, (key, _, _) in TRAIN_FLAGS.items()
             if getattr(args, name) is not None]
    base = load_config(None, args.base)
    return load_config(args.config, flags + args.overrides, base=base)


def run_train(args) -> None:
    from rdistill.finetune import train

    cfg = resolve_config(args)
    if args.command == "finetune" and cfg.train.method == "pretrain":
        raise ValueError("finetune takes --method minimax or difffit; use `rdistill pretrain` to train from scratch")
    run_dir = train(cfg, progress=not args.no_progress)
    print(f"run folder: {run_dir}")


def run_info(args) -> None:
    from rdistill.models.difffit import apply_difffit, count_parameters
    from rdistill.models.dit import build_dit

    try:
        C, H, W = (int(v) for v in args.latent.lower().split("x"))
    except ValueError:
        raise ValueError(f"--latent {args.latent!r} is not of the form CxHxW, e.g. 4x32x32") from None
    dit = build_dit(args.model, sample_size=H, in_channels=C, num_classes=args.num_classes, device="meta")
    if args.peft == "difffit":
        apply_difffit(dit)
    total, trainable = count_parameters(dit)
    print(f"model      {args.model} on {C}x{H}x{W} latents, {args.num_classes} classes")
    print(f"parameters {total:,} ({total / 1e6:.2f} M)")
    print(f"trainable  {trainable:,} ({trainable / 1e6:.2f} M) under {args.peft}")


def run_convert(args) -> None:
    from rdistill.models.convert import load_original_checkpoint
    from rdistill.models.dit import preset

    heads = preset(args.preset).heads if args.preset else None
    dit = load_original_checkpoint(args.ckpt, num_heads=heads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    dit.save_pretrained(args.out)
    print(f"wrote {args.out} (a diffusers DiTTransformer2DModel; rdistill shares its embedders on load)")


if __name__ == "__main__":
    raise SystemExit(main())
