import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdistill.data import DATASETS, IMAGENET_WNIDS, SUBSETS, load_dataset

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
WOOF = SUBSETS["imagewoof"]


# Digits


def test_digits_shapes_ranges_and_metadata():
    d = load_dataset("digits")
    assert d.train.pixels.shape == (1347, 1, 8, 8) and d.test.pixels.shape == (450, 1, 8, 8)  # 1797, 25% test
    assert d.train.pixels.dtype == torch.uint8 and int(d.train.pixels.max()) == 255
    x = d.train.images(range(len(d.train)))
    assert x.min() == -1.0 and x.max() == 1.0
    assert d.classes == tuple("0123456789") and d.model_labels == tuple(range(10))
    assert not d.hflip and d.image_size == 8 and d.channels == 1


def test_digits_split_is_stratified_and_fixed():
    d, again = load_dataset("digits"), load_dataset("digits")
    for k in range(10):
        n_tr, n_te = len(d.train.indices_of(k)), len(d.test.indices_of(k))
        assert n_tr >= 130
        assert abs(n_te - 0.25 * (n_tr + n_te)) <= 1
    assert torch.equal(d.test.pixels, again.test.pixels) and torch.equal(d.train.labels, again.train.labels)


def test_digits_resized_keeps_brightness():
    d8, d16 = load_dataset("digits"), load_dataset("digits", image_size=16)
    assert d16.train.pixels.shape == (1347, 1, 16, 16) and d16.image_size == 16
    assert torch.equal(d8.train.labels, d16.train.labels)
    m8, m16 = d8.train.pixels.float().mean(), d16.train.pixels.float().mean()
    assert abs(m8 - m16) < 0.03 * m8


# Fashion-MNIST from fake IDX files


def _write_idx(path, arr):
    data = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">i4").tobytes() + arr.astype(np.uint8).tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(data)


def _fake_fashion(root, n_train=20, n_test=10, gz=False):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10
        sfx = ".gz" if gz else ""
        _write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", x)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", y)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    written = _fake_fashion(tmp_path, gz=gz)
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert len(d.train) == 20 and len(d.test) == 10 and d.image_size == 28 and d.channels == 1
    x, y = written["t10k"]
    assert torch.equal(d.test.pixels[:, 0], torch.from_numpy(x)) and d.test.labels.tolist() == y.tolist()
    assert torch.equal(d.test.images([3])[0, 0], torch.from_numpy(x[3]).float() / 127.5 - 1)
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot" and len(d.classes) == 10
    assert d.hflip and d.model_labels == tuple(range(10))


def test_fashion_mnist_resizes(tmp_path):
    _fake_fashion(tmp_path)
    d = load_dataset("fashion-mnist", image_size=14, root=tmp_path)
    assert d.train.pixels.shape == (20, 1, 14, 14) and d.test.images([0]).shape == (1, 1, 14, 14)


def test_fashion_mnist_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path / "nothing")
    _fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_bad_magic_and_labels_name_the_file(tmp_path):
    _fake_fashion(tmp_path)
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(b"\x00\x00\x08\x03" + f.read_bytes()[4:])  # claims 3 dims
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)
    _write_idx(f, np.full(20, 10))
    with pytest.raises(ValueError, match="0..9"):
        load_dataset("fashion-mnist", root=tmp_path)


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_installed_package():
    d = load_dataset("fashion-mnist")
    assert len(d.train) == 60000 and len(d.test) == 10000
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    assert d.train.labels[0] == 9  # the first training image is an ankle boot


# Image folders


def _png(path, color=(0, 0, 0), size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _folder(root, classes, n=10):
    for k, c in enumerate(classes):
        for i in range(n):
            _png(root / c / f"{i:03d}.png", color=(20 * k, 5 * i, 0))
    return root


def test_imagefolder_holds_out_ten_percent_per_class(tmp_path):
    _folder(tmp_path, ["eel", "cat", "dog"])
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    assert d.classes == ("cat", "dog", "eel") and d.model_labels == (0, 1, 2) and d.hflip
    assert len(d.train) == 27 and len(d.test) == 3 and torch.bincount(d.test.labels).tolist() == [1, 1, 1]
    assert not set(d.train.paths) & set(d.test.paths)
    assert all(p.parent.name == d.classes[k] for p, k in zip(d.train.paths, d.train.labels.tolist()))
    assert d.train.images([0, 5]).shape == (2, 3, 8, 8)
    assert load_dataset(f"imagefolder:{tmp_path}", image_size=8).test.paths == d.test.paths  # seeded


def test_imagefolder_default_size_is_256(tmp_path):
    _png(tmp_path / "a" / "wide.png", color=(0, 0, 0), size=(12, 9))  # sizes differ: no size of its own
    d = load_dataset(f"imagefolder:{_folder(tmp_path, ['a', 'b'], n=2)}")
    assert d.image_size == 256 and d.channels == 3 and d.test.images([0]).shape == (1, 3, 256, 256)


@pytest.mark.parametrize("test_dir", ["val", "test"])
def test_imagefolder_uses_train_and_val_or_test(tmp_path, test_dir):
    _folder(tmp_path / "train", ["a", "b"], n=4)
    _folder(tmp_path / test_dir, ["a", "b"], n=2)
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    assert len(d.train) == 8 and len(d.test) == 4
    assert all(p.parts[-3] == test_dir for p in d.test.paths)


def test_imagefolder_split_folders_must_agree(tmp_path):
    _folder(tmp_path / "train", ["a", "b"], n=2)
    _folder(tmp_path / "val", ["a", "c"], n=2)
    with pytest.raises(ValueError, match="different classes"):
        load_dataset(f"imagefolder:{tmp_path}")
    _folder(tmp_path / "test", ["a", "b"], n=2)
    with pytest.raises(ValueError, match="both val/ and test/"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_empty_class_folder_is_an_error_naming_it(tmp_path):
    _folder(tmp_path, ["a"], n=3)
    (tmp_path / "hollow").mkdir()
    with pytest.raises(ValueError, match="hollow"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_corrupt_image_error_names_its_path(tmp_path):
    _folder(tmp_path, ["a"], n=20)
    bad = tmp_path / "a" / "005.png"
    bad.write_bytes(b"\x89PNG garbage")
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    split = d.train if bad in d.train.paths else d.test
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        split.images(range(len(split)))


def test_imagefolder_of_imagewoof_wnids_gets_imagenet_labels(tmp_path):
    _folder(tmp_path, WOOF, n=2)
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    assert d.classes == tuple(sorted(WOOF))
    # the sorted WNIDs' ImageNet indices, not 0..9 (SPEC.md section 3)
    assert d.model_labels == (155, 159, 162, 167, 182, 193, 207, 229, 258, 273)
    assert d.train.labels.unique().tolist() == list(range(10))  # the dataset's own class index stays 0..9


def test_imagefolder_mixed_names_keep_folder_indices(tmp_path):
    _folder(tmp_path, [WOOF[0], "zzz-mine"], n=2)
    assert load_dataset(f"imagefolder:{tmp_path}").model_labels == (0, 1)


# ImageNet subsets


def _imagenet(root, wnids, n_train=2, n_val=1):
    _png(root / "proto.png")
    proto = (root / "proto.png").read_bytes()
    for w in wnids:
        for split, n in (("train", n_train), ("val", n_val)):
            (root / split / w).mkdir(parents=True)
            for i in range(n):
                (root / split / w / f"{w}_{i}.JPEG").write_bytes(proto)  # PIL reads by content
    return root


def test_imagewoof_from_an_imagenet_root(tmp_path):
    _imagenet(tmp_path, WOOF + ("n01440764",))  # an extra class the subset ignores
    d = load_dataset("imagewoof", image_size=16, root=tmp_path)
    assert d.classes[:3] == ("n02096294", "n02093754", "n02111889")  # SPEC.md section 4 order
    assert d.model_labels[:3] == (193, 182, 258) and d.num_classes == 10
    assert len(d.train) == 20 and len(d.test) == 10 and d.image_size == 16
    assert all(p.parts[-3] == "val" for p in d.test.paths)
    assert d.test.images([0]).shape == (1, 3, 16, 16)


def test_imagenet_subset_missing_wnid_names_path_and_wnid(tmp_path):
    _imagenet(tmp_path, WOOF)
    shutil.rmtree(tmp_path / "val" / "n02099601")
    with pytest.raises(FileNotFoundError, match="val/n02099601.*golden retriever"):
        load_dataset("imagewoof", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("imagenette", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="root"):
        load_dataset("imageidc")


def test_imagenet1k_is_all_1000_in_label_order(tmp_path):
    d = load_dataset("imagenet1k", root=_imagenet(tmp_path, IMAGENET_WNIDS, n_train=1))
    assert d.classes == IMAGENET_WNIDS and d.model_labels == tuple(range(1000))
    assert len(d.train) == 1000 and len(d.test) == 1000


# Names and arguments


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="imagewoof.*imagenet1k") as e:
        load_dataset("cifar10")
    assert all(n in str(e.value) for n in DATASETS)


@pytest.mark.parametrize("size", [0, -8, 2.5, True, "32"])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", image_size=size)


def test_root_where_none_belongs(tmp_path):
    with pytest.raises(ValueError, match="root"):
        load_dataset("digits", root=tmp_path)
    with pytest.raises(ValueError, match="root"):
        load_dataset(f"imagefolder:{tmp_path}", root=tmp_path)
    with pytest.raises(ValueError, match="imagefolder:PATH"):
        load_dataset("imagefolder:")
