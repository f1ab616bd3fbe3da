import pytest
import torch
from diffusers import AutoencoderKL

from rdistill.data.base import Split
from rdistill.generate.latents import LatentCache, PerStepEncoder, encode_split, fingerprint, load_or_encode
from rdistill.models.codec import PixelCodec, VAECodec


def tiny_vae_codec(seed: int = 0) -> VAECodec:
    """A random 2-level AutoencoderKL: 16x16 RGB -> 4x8x8 latents."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    return VAECodec(vae, spec=f"vae:tiny{seed}", batch_size=4)


def make_split(n=6, c=3, s=16, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)
    return Split(labels=torch.arange(n) % 3, image_size=s, channels=c, pixels=pixels)


@pytest.fixture(scope="module")
def vae_setup():
    codec, split = tiny_vae_codec(), make_split()
    return codec, split, encode_split(codec, split, hflip=True, batch_size=4, dataset_name="toy")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_vae_cache_holds_both_views_encoded(vae_setup):
    codec, split, cache = vae_setup
    assert cache.mean.shape == cache.std.shape == (6, 2, 4, 8, 8)
    x = split.images(range(6))
    mean, std = codec.encode_dist(x)
    mean_f, std_f = codec.encode_dist(x.flip(-1))
    torch.testing.assert_close(cache.mean[:, 0], mean)
    torch.testing.assert_close(cache.std[:, 0], std)
    torch.testing.assert_close(cache.mean[:, 1], mean_f)  # view 1 is the encoding of the flipped image
    torch.testing.assert_close(cache.std[:, 1], std_f)
    assert not torch.allclose(cache.mean[:, 1], mean.flip(-1), atol=1e-3)  # ... which is not the flipped latent
    assert cache.meta["count"] == 6 and cache.meta["dataset"] == "toy" and cache.meta["hflip"] is True


def test_batch_is_reproducible_with_the_same_seed(vae_setup):
    cache = vae_setup[2]
    z1, y1 = cache.batch([5, 0, 2, 2], gen(3))
    z2, y2 = cache.batch([5, 0, 2, 2], gen(3))
    assert torch.equal(z1, z2) and torch.equal(y1, y2)
    assert torch.equal(y1, torch.tensor([2, 0, 2, 2]))
    assert not torch.equal(z1, cache.batch([5, 0, 2, 2], gen(4))[0])
    assert not torch.equal(z1[2], z1[3])  # the same image twice gets two noise draws


def test_cache_matches_per_step_encoding_for_the_same_seed(vae_setup):
    codec, split, cache = vae_setup
    per_step = PerStepEncoder(codec, split, hflip=True)
    for seed in range(4):  # both fetchers draw flips then noise: same seed -> same batch
        idx = torch.randperm(6, generator=gen(seed))[:4]
        z_cache, y_cache = cache.batch(idx, gen(seed))
        z_step, y_step = per_step.batch(idx, gen(seed))
        torch.testing.assert_close(z_cache, z_step, atol=1e-5, rtol=1e-5)
        assert torch.equal(y_cache, y_step)
    assert cache.latent_shape == per_step.latent_shape == (4, 8, 8)


def test_flip_is_chosen_about_half_the_time():
    n = 4000
    mean = torch.stack([torch.zeros(n, 1, 1, 1), torch.ones(n, 1, 1, 1)], dim=1)  # view index as the value
    cache = LatentCache(torch.zeros(n, dtype=torch.long), mean, None, {"hflip": True})
    z, _ = cache.batch(torch.arange(n), gen(0))
    assert 0.47 < z.mean().item() < 0.53
    no_flip = LatentCache(torch.zeros(n, dtype=torch.long), mean[:, :1], None, {"hflip": False})
    assert no_flip.batch(torch.arange(n), gen(0))[0].sum() == 0


def test_pixel_cache_flips_at_fetch_time_like_per_step():
    codec, split = PixelCodec(1), make_split(n=64, c=1, s=4)
    cache = encode_split(codec, split, hflip=True)
    assert cache.mean.shape == (64, 1, 1, 4, 4) and cache.std is None
    per_step = PerStepEncoder(codec, split, hflip=True)
    z, y = cache.batch(torch.arange(64), gen(1))
    z_step, y_step = per_step.batch(torch.arange(64), gen(1))
    assert torch.equal(z, z_step) and torch.equal(y, y_step)
    x = split.images(range(64))
    flipped = torch.tensor([torch.equal(z[i], x[i].flip(-1)) and not torch.equal(z[i], x[i]) for i in range(64)])
    assert 16 < flipped.sum() < 48


def test_save_load_round_trip_is_bit_identical(vae_setup, tmp_path):
    cache = vae_setup[2]
    cache.save(tmp_path / "c")
    back = LatentCache.load(tmp_path / "c", expect_fingerprint=cache.fingerprint)
    assert torch.equal(back.mean, cache.mean) and torch.equal(back.std, cache.std)
    assert torch.equal(back.labels, cache.labels) and back.meta == cache.meta
    assert torch.equal(back.batch([1, 4], gen(7))[0], cache.batch([1, 4], gen(7))[0])
    pixel = encode_split(PixelCodec(1), make_split(n=5, c=1, s=4), hflip=False)
    pixel.save(tmp_path / "p")
    back = LatentCache.load(tmp_path / "p")
    assert back.std is None and torch.equal(back.mean, pixel.mean)


def test_load_refuses_a_cache_from_something_else(vae_setup, tmp_path):
    codec, split, cache = vae_setup
    with pytest.raises(FileNotFoundError, match="no complete latent cache"):
        LatentCache.load(tmp_path / "missing")
    cache.save(tmp_path / "c")
    other = fingerprint(codec, split, hflip=False, dataset_name="toy")
    with pytest.raises(ValueError, match="another codec, split or hflip"):
        LatentCache.load(tmp_path / "c", expect_fingerprint=other)


def test_fingerprint_tracks_codec_split_and_hflip(vae_setup):
    codec, split, cache = vae_setup
    assert cache.fingerprint == fingerprint(codec, split, hflip=True, dataset_name="toy")
    assert cache.fingerprint != fingerprint(codec, split, hflip=False, dataset_name="toy")
    assert cache.fingerprint != fingerprint(codec, make_split(seed=1), hflip=True, dataset_name="toy")
    assert cache.fingerprint != fingerprint(tiny_vae_codec(1), split, hflip=True, dataset_name="toy")


class CountingPixelCodec(PixelCodec):
    calls = 0

    def encode_dist(self, x, batch_size=None):
        self.calls += 1
        return super().encode_dist(x, batch_size)


def test_load_or_encode_reuses_and_refuses(tmp_path):
    codec, split = CountingPixelCodec(1), make_split(n=5, c=1, s=4)
    first = load_or_encode(tmp_path, codec, split, hflip=True, batch_size=2)
    assert codec.calls == 3
    again = load_or_encode(tmp_path, codec, split, hflip=True, batch_size=2)
    assert codec.calls == 3 and torch.equal(again.mean, first.mean)
    with pytest.raises(ValueError, match="fingerprint"):
        load_or_encode(tmp_path, codec, split, hflip=False)


def test_cache_rejects_bad_shapes():
    with pytest.raises(ValueError, match="V in"):
        LatentCache(torch.zeros(2, dtype=torch.long), torch.zeros(2, 3, 1, 4, 4), None)
    with pytest.raises(ValueError, match="std shape"):
        LatentCache(torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, 1, 4, 4), torch.zeros(2, 1, 1, 4, 3))
