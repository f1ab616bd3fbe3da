"""The per-step costs docs/capacity.md scales: FLOPs counted by torch (FlopCounterMode) for the full-size
models on the meta device (nothing allocated), the fine-tuning step's FLOPs relative to its forward counted
on a real DiT-S/2 step here, and this machine's image-decode rate.

    python benchmarks/capacity.py               # ~1-2 minutes here
    python benchmarks/capacity.py --smoke-test  # skips the DiT-S/2 step and most decodes, writes nothing

Counted (2 FLOPs per multiply-add, as torch counts):
- DiT-XL/2 forward at 256 px (4x32x32 latents), 1000 classes: per image;
- SD VAE (AutoencoderKL, SD's config) encoder and decoder at 256 px: per image;
- ResNet-18 forward at 224 px (timm), 1000 classes: per image;
- the minimax fine-tuning step of DiT-S/2 (Difffit, batch 8, 4x32x32): forward, and the whole step
  (forward + backward + criteria), so step / forward is measured, then applied to XL/2.
Timed: centre-cropping a 500x375 JPEG (ImageNet's typical size) to 256 px, one core.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, write_report  # noqa: E402

SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
              sample_size=256, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4)  # stabilityai/sd-vae-ft-ema config.json


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def dit_forward_flops(name: str, device: str = "meta", batch: int = 1) -> int:
    from rdistill.models.dit import build_dit

    dit = build_dit(name, 32, 4, 1000, device=device)
    x, t, y = (torch.zeros(batch, 4, 32, 32, device=device), torch.zeros(batch, dtype=torch.long, device=device),
               torch.zeros(batch, dtype=torch.long, device=device))
    return flops(lambda: dit(x, timestep=t, class_labels=y))


def vae_flops() -> tuple[int, int]:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**SD_VAE)
        x, z = torch.zeros(1, 3, 256, 256), torch.zeros(1, 4, 32, 32)
    return flops(lambda: vae.encode(x).latent_dist.mean), flops(lambda: vae.decode(z).sample)


def resnet18_flops() -> int:
    import timm

    with torch.device("meta"):
        net = timm.create_model("resnet18", pretrained=False, num_classes=1000)
        x = torch.zeros(1, 3, 224, 224)
    return flops(lambda: net(x))


def step_over_forward(batch: int = 8) -> dict:
    """FLOPs and CPU seconds of one real minimax step of DiT-S/2 (Difffit) against its forward."""
    from rdistill.config import load_config
    from rdistill.generate.diffusion import linear_schedule
    from rdistill.generate.finetune import train_step
    from rdistill.generate.minimax import MinimaxMemory
    from rdistill.models.difffit import apply_difffit
    from rdistill.models.dit import build_dit, dit_callable

    torch.manual_seed(0)
    dit = apply_difffit(build_dit("dit-s/2", 32, 4, 1000)).train()
    model = dit_callable(dit)
    cfg = load_config(None, [f"train.batch_size={batch}"])
    memory = MinimaxMemory(64, 4 * 32 * 32, rep="minimax", div="minimax")
    z0, y = torch.randn(batch, 4, 32, 32), torch.arange(batch) % 4
    schedule = linear_schedule()
    g = torch.Generator().manual_seed(0)
    train_step(model, schedule, memory, z0, y, y, 1000, g, cfg)["loss"].backward()  # fills the memories

    def step():
        train_step(model, schedule, memory, z0, y, y, 1000, g, cfg)["loss"].backward()

    t0 = time.perf_counter()
    step_flops = flops(step)
    seconds = time.perf_counter() - t0
    fwd = dit_forward_flops("dit-s/2", "cpu", batch)
    return {"batch": batch, "step_flops": step_flops, "forward_flops": fwd, "step_over_forward": step_flops / fwd,
            "step_cpu_seconds": round(seconds, 2)}


def decode_seconds(n: int) -> float:
    import numpy as np
    from PIL import Image

    from rdistill.data.files import read_image

    rng = np.random.default_rng(0)
    base = (rng.random((375, 500, 3)) * 64 + np.linspace(0, 180, 500)[None, :, None]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(base).save(buf, "JPEG", quality=90)
    t0 = time.perf_counter()
    for _ in range(n):
        read_image(io.BytesIO(buf.getvalue()), 256, 3)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "capacity.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    enc, dec = vae_flops()
    report = {
        "flops_per_image": {"dit_xl2_forward_256": dit_forward_flops("dit-xl/2"),
                            "dit_s2_forward_256": dit_forward_flops("dit-s/2"),
                            "sd_vae_encode_256": enc, "sd_vae_decode_256": dec, "resnet18_forward_224": resnet18_flops()},
        "finetune_step": None if args.smoke_test else step_over_forward(),
        "jpeg_500x375_to_256_seconds_per_image_one_core": round(decode_seconds(5 if args.smoke_test else 200), 5),
        "machine": machine(),
    }
    print(report)
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
