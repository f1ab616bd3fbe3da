import pytest
import torch
from diffusers import AutoencoderKL

from rdistill.models.codec import SD_VAE_SCALE, PixelCodec, VAECodec, codec_identity, load_codec, sample_latent


def tiny_vae(seed: int = 0, **kw) -> AutoencoderKL:
    """A 2-level random AutoencoderKL: 16x16 RGB -> 4x8x8 latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                         sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, **kw).eval()


@pytest.fixture
def vae_dir(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def images(n=3, c=3, s=16, seed=1):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_vae_codec_shapes_and_attributes(vae_dir):
    codec = VAECodec.from_folder(vae_dir)
    assert (codec.latent_channels, codec.downsample, codec.scale, codec.stochastic) == (4, 2, SD_VAE_SCALE, True)
    mean, std = codec.encode_dist(images())
    assert mean.shape == std.shape == (3, 4, 8, 8)
    assert mean.dtype == std.dtype == torch.float32
    out = codec.decode(mean)
    assert out.shape == (3, 3, 16, 16)
    assert out.min() >= -1 and out.max() <= 1


def test_moments_are_the_vae_posterior_times_scale(vae_dir):
    codec, x = VAECodec.from_folder(vae_dir), images()
    with torch.no_grad():
        dist = AutoencoderKL.from_pretrained(vae_dir).encode(x).latent_dist
    mean, std = codec.encode_dist(x)
    torch.testing.assert_close(mean, dist.mean * 0.18215)
    torch.testing.assert_close(std, dist.std * 0.18215)
    # the reference's latent_dist.sample() * 0.18215 with the same generator state is our sample
    z = sample_latent(mean, std, torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, dist.sample(torch.Generator().manual_seed(5)) * 0.18215)


def test_sample_latent_has_the_posterior_moments():
    mean, std = torch.tensor([0.5, -2.0]), torch.tensor([0.1, 2.0])
    z = sample_latent(mean.expand(20000, 2), std.expand(20000, 2), torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), std, atol=0.05, rtol=0)
    assert sample_latent(mean, None, None) is mean


def test_batched_encode_equals_one_batch(vae_dir):
    codec, x = VAECodec.from_folder(vae_dir), images(5)
    m1, s1 = codec.encode_dist(x, batch_size=2)
    m5, s5 = codec.encode_dist(x, batch_size=5)
    torch.testing.assert_close(m1, m5)
    torch.testing.assert_close(s1, s5)


def test_folder_with_vae_subfolder_is_accepted(vae_dir):
    codec = load_codec(f"vae:{vae_dir.parent}", channels=3)  # a pipeline folder: vae/ holds the VAE
    assert isinstance(codec, VAECodec) and codec.spec == f"vae:{vae_dir.parent}"


def test_config_scaling_factor_is_used_with_a_warning(tmp_path):
    tiny_vae(scaling_factor=0.13025).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="0.13025"):
        codec = VAECodec.from_folder(tmp_path)
    assert codec.scale == 0.13025
    x, vae = images(1), AutoencoderKL.from_pretrained(tmp_path)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        torch.testing.assert_close(codec.encode_dist(x)[0], mean * 0.13025)
        torch.testing.assert_close(codec.decode(mean * 0.13025), vae.decode(mean).sample.clamp(-1, 1))


def test_missing_folder_and_folder_without_config_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VAECodec.from_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*config.json"):
        load_codec(f"vae:{tmp_path / 'empty'}", channels=3)


def test_load_codec_rejects_unknown_specs_and_channel_mismatch(vae_dir):
    for spec in ("vae", "vae:", "VAE:/x", "identity"):
        with pytest.raises(ValueError, match="unknown codec"):
            load_codec(spec, channels=3)
    with pytest.raises(ValueError, match="3-channel.*1"):
        load_codec(f"vae:{vae_dir}", channels=1)


def test_pixel_codec_is_the_identity():
    codec, x = load_codec("pixel", channels=1), images(4, c=1, s=8)
    assert isinstance(codec, PixelCodec)
    assert (codec.latent_channels, codec.downsample, codec.scale, codec.stochastic) == (1, 1, 1.0, False)
    mean, std = codec.encode_dist(x)
    assert torch.equal(mean, x) and torch.equal(std, torch.zeros_like(x))
    assert torch.equal(codec.decode(mean), x)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\).*\(4, 3, 8, 8\)"):
        codec.encode_dist(images(4, c=3, s=8))


def test_codec_identity_follows_the_weights_not_the_path(tmp_path):
    a, b = VAECodec(tiny_vae(0), spec="vae:/a"), VAECodec(tiny_vae(0), spec="vae:/b")
    assert codec_identity(a) == codec_identity(b)
    assert codec_identity(a) != codec_identity(VAECodec(tiny_vae(1), spec="vae:/a"))
    assert codec_identity(PixelCodec(1)) != codec_identity(PixelCodec(3))
