import pytest
import torch

from rdistill.data import load_dataset
from rdistill.generate.select import embedding, herding, k_center, random_order, select_coreset
from rdistill.data.shards import Manifest, read_surrogate


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_herding_matches_the_mean_greedily():
    f = torch.tensor([[0.0], [10.0], [4.0], [6.0]])  # mean 5
    # t=1: |5 - f| is 1 for 4 and 6 -> the lower index (2); t=2: (4 + 6) / 2 = 5 -> index 3; then 0 vs 10 tie
    assert herding(f, 3) == [2, 3, 0]


def test_k_center_starts_at_the_mean_then_goes_farthest():
    f = torch.tensor([[0.0], [1.0], [5.0], [9.0], [10.0]])  # mean 5
    # first: index 2 (at the mean); then 0 and 10 are both 5 away -> index 0; then 10 (distance 5 from 5)
    assert k_center(f, 3) == [2, 0, 4]


def test_random_order_is_seeded_per_class():
    assert random_order(100, 5, seed=0, label=3) == random_order(100, 5, seed=0, label=3)
    assert random_order(100, 5, seed=0, label=3) != random_order(100, 5, seed=0, label=4)
    assert random_order(100, 5, seed=1, label=3) != random_order(100, 5, seed=0, label=3)


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_select_writes_ipc_real_images_per_class(digits, tmp_path, method):
    m = select_coreset(digits, method, ipc=4, seed=0, out=tmp_path)
    s = read_surrogate(tmp_path)
    assert m.counts == {c: 4 for c in digits.classes} and m.method == method and m.source == "real:digits"
    assert s.labels.tolist() == [k for k in range(10) for _ in range(4)]
    picked = torch.tensor([i for c in digits.classes for i in m.config["selected"][c]])
    assert torch.equal(digits.train.labels[picked], s.labels)  # each pick is of its class
    x, _ = s.tensors()
    assert torch.equal(x, digits.train.images(picked))  # the real pixels, exactly
    assert m.config["features"] == (None if method == "random" else "convnet-3-random-seed0")


def test_herding_differs_from_random_and_k_center_starts_nearest_the_mean(digits, tmp_path):
    methods = ("random", "herding", "kcenter")
    sel = {meth: select_coreset(digits, meth, 3, 0, tmp_path / meth).config["selected"] for meth in methods}
    assert sel["herding"] != sel["random"] != sel["kcenter"]
    name, embed = embedding("convnet", digits)
    idx = digits.train.indices_of(5)
    with torch.no_grad():
        f = embed(digits.train.images(idx)).flatten(1)
    assert sel["kcenter"]["5"][0] == int(idx[torch.argmin(((f - f.mean(0)) ** 2).sum(1))])
    assert len(set(sel["herding"]["5"])) == 3  # no image twice


def test_a_smaller_ipc_is_a_prefix(digits, tmp_path):
    a = select_coreset(digits, "herding", 2, 0, tmp_path / "a", features="pixels").config
    b = select_coreset(digits, "herding", 5, 0, tmp_path / "b", features="pixels").config
    assert all(b["selected"][c][:2] == a["selected"][c] for c in digits.classes)
    assert a["features"] == "pixels"


def test_bad_requests(digits, tmp_path):
    with pytest.raises(ValueError, match=r"\('8', 131\)"):  # digits' smallest class: 131 training images
        select_coreset(digits, "kcenter", 132, 0, tmp_path)
    with pytest.raises(ValueError, match="method"):
        select_coreset(digits, "kmeans", 2, 0, tmp_path)
    with pytest.raises(ValueError, match="ipc must be >= 1"):
        select_coreset(digits, "random", 0, 0, tmp_path)
    assert not any(tmp_path.iterdir())


def test_select_refuses_another_set_unless_overwrite(digits, tmp_path):
    select_coreset(digits, "random", 2, 0, tmp_path)
    with pytest.raises(ValueError, match="another run"):
        select_coreset(digits, "random", 2, 1, tmp_path)
    select_coreset(digits, "random", 2, 1, tmp_path, overwrite=True)
    assert Manifest.load(tmp_path).config["seed"] == 1


def test_cli_select(tmp_path, capsys):
    from rdistill import cli

    base = ["select", "--dataset", "digits", "--method", "herding", "--features", "pixels", "--no-progress"]
    assert cli.main([*base, "--ipc", "1", "--out", str(tmp_path / "s")]) == 0
    assert cli.main([*base, "--ipc", "200", "--out", str(tmp_path / "t")]) == 2
    assert Manifest.load(tmp_path / "s").config["features"] == "pixels"
    assert "ipc=200 is more than these classes have" in capsys.readouterr().err
