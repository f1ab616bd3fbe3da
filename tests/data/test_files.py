import gzip
import re

import numpy as np
import pytest
import torch
from PIL import Image

from rdistill.data.files import class_folders, list_images, read_idx, read_image


def _bands(path, w=60, h=20):
    """An RGB image: left third red, middle green, right third blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3, 0] = 255
    a[:, w // 3 : 2 * w // 3, 1] = 255
    a[:, 2 * w // 3 :, 2] = 255
    Image.fromarray(a).save(path)
    return path


def test_read_image_resizes_shorter_side_then_crops_the_centre(tmp_path):
    x = read_image(_bands(tmp_path / "b.png"), 10, 3)  # 60x20 -> 30x10 -> central 10x10 = green band
    assert x.shape == (3, 10, 10) and x.dtype == torch.float32
    centre = x[:, :, 2:8]  # away from the band edges where bicubic rings
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand_as(centre)
    torch.testing.assert_close(centre, green, atol=0.02, rtol=0)


def test_read_image_halves_large_images_and_keeps_the_range(tmp_path):
    x = read_image(_bands(tmp_path / "big.png", w=768, h=256), 64, 3)  # box-halved twice, then exact
    assert x.shape == (3, 64, 64)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x[1, :, 20:44].mean() > 0.99  # the centre is the green band


def test_read_image_grayscale_and_exact_extremes(tmp_path):
    Image.new("RGB", (9, 7), (255, 255, 255)).save(tmp_path / "w.png")
    Image.new("L", (7, 9), 0).save(tmp_path / "k.jpg")
    assert torch.equal(read_image(tmp_path / "w.png", 5, 1), torch.ones(1, 5, 5))
    assert torch.equal(read_image(tmp_path / "k.jpg", 5, 3), -torch.ones(3, 5, 5))  # L -> RGB


def test_read_image_rejects_bad_channels(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="channels"):
        read_image(tmp_path / "a.png", 4, 2)


def test_unreadable_images_raise_value_error_naming_the_path(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "full.jpg", quality=95)
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    for bad in (junk, cut):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            read_image(bad, 8, 3)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png", 8, 3)


def _idx(path, arr, code=0x08, dtype=">u1"):
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">i4").tobytes()
    data = header + arr.astype(dtype).tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(data)
    return path


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_round_trips_plain_and_gzip(tmp_path, name):
    a = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    b = read_idx(_idx(tmp_path / name, a), ndim=3)
    assert b.dtype == np.uint8 and np.array_equal(a, b)


def test_read_idx_big_endian_int32(tmp_path):
    a = np.array([1, -2, 70000], np.int32)
    assert np.array_equal(read_idx(_idx(tmp_path / "i", a, code=0x0C, dtype=">i4"), ndim=1), a)


def test_read_idx_rejects_bad_magic_wrong_rank_and_truncation(tmp_path):
    a = np.zeros((2, 3, 3), np.uint8)
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x01\x02\x08\x03" + _idx(tmp_path / "ok", a).read_bytes()[4:])
    with pytest.raises(ValueError, match="bad-magic"):
        read_idx(bad, ndim=3)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "ok", ndim=1)  # an image file where labels were expected
    short = tmp_path / "short"
    short.write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="short"):
        read_idx(short, ndim=3)


def test_list_images_sorted_skips_other_files(tmp_path):
    for n in ("b.PNG", "a.jpeg", "c.txt", ".DS_Store"):
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpeg", "b.PNG"]


def test_list_images_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="empty"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_class_folders_sorted_without_hidden_or_files(tmp_path):
    for d in ("zebra", "ant", ".cache"):
        (tmp_path / d).mkdir()
    (tmp_path / "readme.md").write_text("x")
    assert class_folders(tmp_path) == ("ant", "zebra")
    with pytest.raises(ValueError, match="no class subfolders"):
        class_folders(tmp_path / "ant")
