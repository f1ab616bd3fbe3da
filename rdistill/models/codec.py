"""Codecs: what maps images in [-1, 1] to the space the diffusion model lives in, and back.

A codec gives the *distribution* of an image's latent (mean and std, already multiplied by the
scale factor), not a sample: the latent cache stores the moments once and draws a fresh sample
every step with `sample_latent`, which is the reference's `vae.encode(x).latent_dist.sample() * 0.18215`
(SPEC.md section 1) done from cached moments with an explicit generator.

- `PixelCodec`: the identity, for small images (MNIST-family); deterministic (no std).
- `VAECodec`: Stable Diffusion's `AutoencoderKL` from a local diffusers folder.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Protocol

import torch

SD_VAE_SCALE = 0.18215  # SD VAE latent scale factor (DiT train.py / sample.py)


class Codec(Protocol):
    spec: str  # how `load_codec` rebuilds it, e.g. "pixel" or "vae:/models/sd-vae-ft-ema"
    latent_channels: int
    downsample: int  # spatial factor: latents are (C, H / downsample, W / downsample)
    scale: float
    stochastic: bool  # False: encode_dist's std is zero, and callers may skip the noise draw

    def encode_dist(self, x: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


class PixelCodec:
    """Identity codec: the latent of an image is the image itself (mean = x, std = 0)."""

    downsample = 1
    scale = 1.0
    stochastic = False
    spec = "pixel"

    def __init__(self, channels: int):
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.latent_channels = channels

    def encode_dist(self, x: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images(x, self.latent_channels)
        x = x.float()
        return x, torch.zeros((), dtype=x.dtype, device=x.device).expand_as(x)  # std: a broadcast view, no memory

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.float().clamp(-1.0, 1.0)  # as save_image(value_range=(-1, 1)) does in the reference


class VAECodec:
    """A diffusers `AutoencoderKL`; latents are `latent_dist.mean * scale` and `latent_dist.std * scale`."""

    stochastic = True

    def __init__(self, vae, *, spec: str, batch_size: int = 32):
        self.vae = vae.eval().requires_grad_(False)
        self.spec = spec
        self.batch_size = batch_size
        cfg = vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.scale = float(getattr(cfg, "scaling_factor", None) or SD_VAE_SCALE)
        if self.scale != SD_VAE_SCALE:
            warnings.warn(f"VAE config scaling_factor {self.scale} differs from the SD VAE's {SD_VAE_SCALE}; using {self.scale}")
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)  # 0 for SD VAEs (SD3/Flux VAEs shift)

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    batch_size: int = 32) -> VAECodec:
        """Load from a diffusers AutoencoderKL folder, or a pipeline folder whose `vae/` holds one."""
        from diffusers import AutoencoderKL

        folder = _vae_folder(Path(path))
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype, low_cpu_mem_usage=False).to(device)
        return cls(vae, spec=f"vae:{path}", batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode_dist(self, x: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, H, W) in [-1, 1] -> mean, std (N, c, H/f, W/f) float32 on x's device, scaled."""
        _check_images(x, int(self.vae.config.in_channels))
        means, stds = [], []
        for chunk in x.split(batch_size or self.batch_size):
            dist = self.vae.encode(chunk.to(self.device, self.dtype)).latent_dist
            means.append(((dist.mean - self.shift) * self.scale).float().to(x.device))
            stds.append((dist.std * self.scale).float().to(x.device))
        return torch.cat(means), torch.cat(stds)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """z (N, c, h, w) scaled latents -> images (N, C, h*f, w*f) float32 in [-1, 1] on z's device."""
        out = []
        for chunk in z.split(batch_size or self.batch_size):
            x = self.vae.decode(chunk.to(self.device, self.dtype) / self.scale + self.shift).sample
            out.append(x.float().clamp(-1.0, 1.0).to(z.device))  # as save_image(value_range=(-1, 1))
        return torch.cat(out)


def load_codec(spec: str, channels: int, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> Codec:
    """"pixel" -> PixelCodec(channels); "vae:PATH" -> VAECodec from the local folder PATH."""
    if spec == "pixel":
        return PixelCodec(channels)
    if spec.startswith("vae:") and len(spec) > 4:
        codec = VAECodec.from_folder(spec[4:], device, dtype)
        in_ch = int(codec.vae.config.in_channels)
        if in_ch != channels:
            raise ValueError(f"codec {spec!r} takes {in_ch}-channel images, the dataset has {channels}")
        return codec
    raise ValueError(f"unknown codec {spec!r}: use 'pixel' or 'vae:PATH' (a diffusers AutoencoderKL folder)")


def sample_latent(mean: torch.Tensor, std: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """z = mean + std * noise, noise ~ N(0, I) drawn from `generator`; std None means deterministic."""
    if std is None:
        return mean
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + std * noise


def codec_identity(codec: Codec) -> str:
    """A digest of what the codec computes (kind, config and weights, not the folder's path)."""
    vae = getattr(codec, "vae", None)
    if vae is None:
        return f"pixel:{codec.latent_channels}"
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, t in vae.state_dict().items():  # ~1 s for the SD VAE's 84 M parameters
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "vae:" + h.hexdigest()


def _vae_folder(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    if (path / "vae" / "config.json").is_file():
        return path / "vae"
    if not path.exists():
        raise FileNotFoundError(f"VAE folder {path} does not exist")
    raise FileNotFoundError(f"{path} holds no config.json (nor vae/config.json): not a diffusers AutoencoderKL folder")


def _check_images(x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected images (N, {channels}, H, W), got shape {tuple(x.shape)}")
