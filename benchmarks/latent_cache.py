"""Latent cache vs per-step encoding: the cost of the training loop's data fetches.

The reference encodes each batch with the VAE at every step; rdistill encodes each image (and its
mirror image) once and then only draws z = mean + std * noise. This measures, on random-weight
AutoencoderKLs and random images, with one torch thread:
- build_s: encoding the whole split once, both views (the cache's one-off cost);
- fetch time of `steps` batches of 8 from the cache and from `PerStepEncoder`;
- end to end over `epochs` epochs (the reference fine-tunes 8): build + cached fetches vs per-step fetches.

    .venv/bin/python benchmarks/latent_cache.py [--smoke-test]

writes benchmarks/results/latent_cache.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL

from rdistill.data.base import Split
from rdistill.generate.latents import PerStepEncoder, encode_split
from rdistill.models.codec import VAECodec

BATCH = 8  # SPEC.md section 1: global batch 8
EPOCHS = 8  # SPEC.md section 1: 8 epochs over the subset
CONFIGS = {  # name: (block_out_channels, norm groups, image size)
    "tiny-32px": ((8, 16), 8, 32),
    "small-64px": ((32, 64, 64), 32, 64),
}


def make_codec(blocks: tuple[int, ...], groups: int, size: int) -> VAECodec:
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=blocks, layers_per_block=1, latent_channels=4, norm_num_groups=groups,
                        sample_size=size, down_block_types=("DownEncoderBlock2D",) * len(blocks),
                        up_block_types=("UpDecoderBlock2D",) * len(blocks))
    return VAECodec(vae, spec=f"vae:random{blocks}", batch_size=32)


def make_split(n: int, size: int) -> Split:
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return Split(labels=torch.arange(n) % 10, image_size=size, channels=3, pixels=pixels)


def time_fetches(fetcher, n: int, steps: int) -> float:
    """Seconds for `steps` fetches of BATCH random indices (after one warm-up fetch)."""
    g = torch.Generator().manual_seed(0)
    fetcher.batch(torch.randint(0, n, (BATCH,), generator=g), g)
    t0 = time.perf_counter()
    for _ in range(steps):
        fetcher.batch(torch.randint(0, n, (BATCH,), generator=g), g)
    return time.perf_counter() - t0


def bench(name: str, n_images: int, epochs: int) -> dict:
    blocks, groups, size = CONFIGS[name]
    codec, split = make_codec(blocks, groups, size), make_split(n_images, size)
    steps = epochs * n_images // BATCH
    t0 = time.perf_counter()
    cache = encode_split(codec, split, hflip=True, batch_size=32)
    build_s = time.perf_counter() - t0
    cached_s = time_fetches(cache, n_images, steps)
    per_step_s = time_fetches(PerStepEncoder(codec, split, hflip=True), n_images, steps)
    return {
        "name": name, "block_out_channels": list(blocks), "image_shape": [3, size, size],
        "latent_shape": list(cache.mean.shape[2:]), "cache_shape": list(cache.mean.shape),
        "n_images": n_images, "batch": BATCH, "epochs": epochs, "steps": steps,
        "build_s": build_s, "cached_fetch_s": cached_s, "per_step_fetch_s": per_step_s,
        "cached_ms_per_fetch": 1e3 * cached_s / steps, "per_step_ms_per_fetch": 1e3 * per_step_s / steps,
        "fetch_speedup": per_step_s / cached_s,
        "end_to_end_speedup": per_step_s / (build_s + cached_s),  # one build, `epochs` epochs of fetches
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--smoke-test", action="store_true", help="16 images, 1 epoch, no JSON written")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, epochs = (16, 1) if args.smoke_test else (args.n_images, args.epochs)
    rows = [bench(name, n, epochs) for name in CONFIGS]
    print(f"{'config':<12} {'latent':<10} {'build s':>8} {'cache ms/step':>14} {'encode ms/step':>15} "
          f"{'fetch x':>8} {'end-to-end x':>13}")
    for r in rows:
        print(f"{r['name']:<12} {'x'.join(map(str, r['latent_shape'])):<10} {r['build_s']:8.3f} "
              f"{r['cached_ms_per_fetch']:14.3f} {r['per_step_ms_per_fetch']:15.2f} {r['fetch_speedup']:8.1f} "
              f"{r['end_to_end_speedup']:13.2f}")
    if args.smoke_test:
        return
    out = Path(__file__).parent / "results" / "latent_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
            "command": "python benchmarks/latent_cache.py", "results": rows}
    out.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
