"""The latent cache: encode a split once, then draw a fresh latent sample per training step.

The reference encodes every batch anew: flip the images (p = 0.5), run the VAE, sample the posterior.
The posterior's moments of an image never change, so rdistill encodes them once per view (the image
and, with hflip, its mirror image: a VAE's latent of a flipped image is not the flipped latent, so both
views are encoded) and each step only picks a view and draws `z = mean + std * noise`. The latents
have the reference's distribution exactly; only the encoder's cost leaves the training loop.

For the pixel codec the latent is the image itself: the cache holds one view and no std, and the
flipped view is made by flipping at fetch time (exact, since the identity commutes with the flip).

This in-process cache serves small datasets (digits, Fashion-MNIST, the pixel codec). A VAE-coded folder
dataset at ImageNet scale sets `data.latent_store` and uses rdistill.generate.latent_store instead: the same
moments and draws, sharded by class in storage, shared by every run.

`PerStepEncoder` is the reference's behaviour (encode at every step), kept for parity. Both fetchers
draw from the generator in the same order (flips, then noise), so with the same seed they return the
same batch up to the encoder's floating-point batch effects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from rdistill.common.files import atomic_path, atomic_write_text
from rdistill.data.base import Split
from rdistill.models.codec import Codec, codec_identity, sample_latent

TENSORS_FILE, META_FILE = "latents.safetensors", "meta.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LatentCache:
    """Latent moments of N images in V views (V = 2: [image, flipped image]; V = 1: image only)."""

    labels: torch.Tensor  # (N,) int64
    mean: torch.Tensor  # (N, V, C, h, w) float32, scaled
    std: torch.Tensor | None  # (N, V, C, h, w), or None for a deterministic codec
    meta: dict = field(default_factory=dict)  # codec, dataset, image_size, hflip, count, fingerprint

    def __post_init__(self):
        if self.mean.ndim != 5 or self.mean.shape[1] not in (1, 2) or len(self.mean) != len(self.labels):
            raise ValueError(f"mean must be (N={len(self.labels)}, V in {{1, 2}}, C, h, w), got {tuple(self.mean.shape)}")
        if self.std is not None and self.std.shape != self.mean.shape:
            raise ValueError(f"std shape {tuple(self.std.shape)} differs from mean shape {tuple(self.mean.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def views(self) -> int:
        return self.mean.shape[1]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape[2:])  # (C, h, w)

    @property
    def hflip(self) -> bool:
        return bool(self.meta.get("hflip", self.views == 2))

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")

    def batch(self, idx: Sequence[int] | torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents z (n, C, h, w) and labels (n,) of the samples idx: a random view each, a fresh sample."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        flip = _draw_flips(len(idx), self.hflip, generator)  # (n,) bool
        view = flip.long() if self.views == 2 else torch.zeros_like(idx)
        mean = self.mean[idx, view]  # (n, C, h, w)
        std = None if self.std is None else self.std[idx, view]
        if self.views == 1 and self.hflip:  # pixel codec: the flipped view is the flipped image
            mean = _flip_where(mean, flip)
            std = None if std is None else _flip_where(std, flip)
        return sample_latent(mean, std, generator), self.labels[idx]

    def save(self, path: str | Path) -> None:
        """Write `path/latents.safetensors` and `path/meta.json` (meta last: its presence marks a complete cache)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"labels": self.labels.contiguous(), "mean": self.mean.contiguous()}
        if self.std is not None:
            tensors["std"] = self.std.contiguous()
        with atomic_path(path / TENSORS_FILE) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_text(path / META_FILE, json.dumps(self.meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path, expect_fingerprint: str | None = None) -> LatentCache:
        """Read a saved cache; with expect_fingerprint, refuse one that another codec / split produced."""
        path = Path(path)
        if not (path / META_FILE).is_file() or not (path / TENSORS_FILE).is_file():
            raise FileNotFoundError(f"no complete latent cache in {path} (needs {META_FILE} and {TENSORS_FILE})")
        meta = json.loads((path / META_FILE).read_text())
        if expect_fingerprint is not None and meta.get("fingerprint") != expect_fingerprint:
            raise ValueError(f"latent cache {path} has fingerprint {meta.get('fingerprint')}, expected "
                             f"{expect_fingerprint}: it was made by another codec, split or hflip setting; "
                             "delete it or use another cache folder")
        t = load_file(str(path / TENSORS_FILE))
        cache = cls(t["labels"], t["mean"], t.get("std"), meta)
        if len(cache) != meta.get("count"):
            raise ValueError(f"latent cache {path} holds {len(cache)} images, its meta says {meta.get('count')}")
        return cache


class PerStepEncoder:
    """The reference's fetch: read the images, flip each with p = 0.5, encode, sample the posterior."""

    def __init__(self, codec: Codec, split: Split, hflip: bool):
        self.codec, self.split, self.hflip = codec, split, hflip

    def __len__(self) -> int:
        return len(self.split)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        h = self.split.image_size // self.codec.downsample
        return (self.codec.latent_channels, h, h)  # (C, h, w)

    def batch(self, idx: Sequence[int] | torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        flip = _draw_flips(len(idx), self.hflip, generator)  # same draw order as LatentCache.batch
        x = _flip_where(self.split.images(idx), flip)  # (n, C, S, S)
        mean, std = self.codec.encode_dist(x)
        return sample_latent(mean, std if self.codec.stochastic else None, generator), self.split.labels[idx]


def encode_split(codec: Codec, split: Split, *, hflip: bool, batch_size: int = 32, progress: bool = False,
                 dataset_name: str = "") -> LatentCache:
    """Encode every image of `split` (and its mirror image, if hflip and the codec is a VAE) once."""
    both = hflip and codec.stochastic  # pixel codec: flip at fetch time instead
    means, stds = [], []
    chunks = torch.arange(len(split)).split(batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"encoding {dataset_name or 'split'}", unit="batch")
    for idx in chunks:
        x = split.images(idx)  # (B, C, S, S)
        views = torch.cat([x, x.flip(-1)]) if both else x  # (V*B, C, S, S)
        m, s = codec.encode_dist(views, batch_size)
        means.append(m.unflatten(0, (-1, len(x))).transpose(0, 1))  # (B, V, C, h, w)
        if codec.stochastic:
            stds.append(s.unflatten(0, (-1, len(x))).transpose(0, 1))
    mean = torch.cat(means).contiguous()
    meta = {"format": FORMAT_VERSION, "codec": codec.spec, "dataset": dataset_name, "image_size": split.image_size,
            "channels": split.channels, "hflip": hflip, "count": len(split), "views": mean.shape[1],
            "latent_shape": list(mean.shape[2:]), "torch": torch.__version__,
            "fingerprint": fingerprint(codec, split, hflip=hflip, dataset_name=dataset_name)}
    return LatentCache(split.labels.clone(), mean, torch.cat(stds).contiguous() if stds else None, meta)


def load_or_encode(path: str | Path, codec: Codec, split: Split, *, hflip: bool, batch_size: int = 32,
                   progress: bool = False, dataset_name: str = "") -> LatentCache:
    """Reuse the cache in `path` if the same codec, split and hflip made it; else encode and save one."""
    fp = fingerprint(codec, split, hflip=hflip, dataset_name=dataset_name)
    if (Path(path) / META_FILE).is_file():
        return LatentCache.load(path, expect_fingerprint=fp)
    cache = encode_split(codec, split, hflip=hflip, batch_size=batch_size, progress=progress, dataset_name=dataset_name)
    cache.save(path)
    return cache


def fingerprint(codec: Codec, split: Split, *, hflip: bool, dataset_name: str = "") -> str:
    """sha256 of what determines a cache: the codec's weights, the split's images and labels, hflip."""
    h = hashlib.sha256(json.dumps([codec_identity(codec), dataset_name, split.image_size, split.channels, hflip]).encode())
    h.update(split.labels.numpy().tobytes())
    if split.pixels is not None:
        h.update(split.pixels.contiguous().numpy().tobytes())
    else:
        h.update("\n".join(str(p) for p in split.paths).encode())
    return h.hexdigest()


def _draw_flips(n: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """(n,) bool: flip each sample with p = 0.5 (the reference's RandomHorizontalFlip)."""
    if not hflip:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=generator) < 0.5


def _flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the samples of x (n, C, H, W) where flip (n,) is True."""
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
