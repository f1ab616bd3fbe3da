"""`rdistill info` and `rdistill convert-dit`: DiT sizes and checkpoint formats."""

from __future__ import annotations

from pathlib import Path

from rdistill.commands import checks


def register(sub) -> None:
    p = sub.add_parser("info", help="parameter counts of a DiT preset, without loading weights")
    p.add_argument("--model", default="dit-xl/2", help="DiT preset (default dit-xl/2)")
    p.add_argument("--peft", default="difffit", choices=["difffit", "full"], help="what trains (default difffit)")
    p.add_argument("--num-classes", type=int, default=1000, help="class labels (default 1000, ImageNet)")
    p.add_argument("--latent", default="4x32x32", help="latent shape CxHxW (default 4x32x32: 256px through the SD VAE)")
    p.set_defaults(handler=run_info)

    p = sub.add_parser("convert-dit", help="convert an original DiT checkpoint (.pt) to a diffusers folder")
    p.add_argument("--ckpt", required=True, help="the original checkpoint, e.g. DiT-XL-2-256x256.pt")
    p.add_argument("--out", required=True, help="the diffusers folder to write")
    p.add_argument("--preset", default=None, help="DiT preset, for the number of heads (default: from the width)")
    p.set_defaults(handler=run_convert)


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
    checks.existing_file(args.ckpt, "--ckpt")
    checks.output_folder(args.out)
    from rdistill.models.convert import load_original_checkpoint
    from rdistill.models.dit import preset
    from rdistill.models.loading import plain_state_dict

    heads = preset(args.preset).heads if args.preset else None
    with plain_state_dict(args.ckpt):
        dit = load_original_checkpoint(args.ckpt, num_heads=heads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    dit.save_pretrained(args.out)
    print(f"wrote {args.out} (a diffusers DiTTransformer2DModel; rdistill shares its embedders on load)")
