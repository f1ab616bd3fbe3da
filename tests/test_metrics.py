import math

import numpy as np
import pytest
import torch

import rdistill.evaluate.metrics as metrics
from rdistill.evaluate.metrics import features, median_distance, mmd, tsne_embedding
from rdistill.models.students import build_student, feature_extractor


def gaussian(n: int, seed: int, shift: float = 0.0, d: int = 8) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_mmd_of_a_sample_with_itself_is_zero(kernel):
    x = gaussian(50, 0)
    assert mmd(x, x, kernel=kernel) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("kernel", "bandwidth"), [("rbf", None), ("rbf", 3.0), ("linear", None)])
def test_mmd_grows_with_the_shift(kernel, bandwidth):
    x = gaussian(200, 0)
    values = [mmd(x, gaussian(200, 1, shift), kernel, bandwidth) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 0.1 * values[-1]


def test_linear_mmd_is_the_squared_distance_of_the_means():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # mean (1, 0)
    y = torch.tensor([[1.0, 3.0]])
    assert mmd(x, y, kernel="linear") == pytest.approx(9.0)


def test_rbf_mmd_by_hand():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(2 - 2 * math.exp(-0.5))
    # default bandwidth: the median pooled distance, here 1
    assert mmd(x, y) == pytest.approx(2 - 2 * math.exp(-0.5))


def test_rbf_mmd_is_the_same_in_chunks(monkeypatch):
    x, y = gaussian(70, 0), gaussian(30, 1, 0.5)
    whole = mmd(x, y, bandwidth=2.0)
    monkeypatch.setattr(metrics, "CHUNK", 16)
    assert mmd(x, y, bandwidth=2.0) == pytest.approx(whole, rel=1e-12)


def test_median_distance_by_hand():
    assert median_distance(torch.tensor([[0.0], [1.0], [3.0]])) == pytest.approx(2.0)  # distances 1, 3, 2


def test_mmd_refuses_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        mmd(gaussian(3, 0), gaussian(3, 1), kernel="poly")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        mmd(gaussian(3, 0), gaussian(3, 1, d=4))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(gaussian(3, 0), gaussian(3, 1), bandwidth=0.0)


def test_features_are_the_penultimate_layer_in_batches():
    torch.manual_seed(0)
    model = build_student("convnet-3", num_classes=10, channels=1, image_size=28)
    images = torch.randn(7, 1, 28, 28)
    f = features(model, images, batch_size=3)
    assert f.shape == (7, 128 * 4 * 4)
    with torch.no_grad():
        torch.testing.assert_close(f, feature_extractor(model.eval())(images))


def test_tsne_embedding_is_2d_and_seeded():
    x = torch.cat([gaussian(15, 0), gaussian(15, 1, shift=10.0)])
    a, b = tsne_embedding(x, seed=0), tsne_embedding(x, seed=0)
    assert a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # the two far-apart clusters stay apart: every point is nearer its own cluster's centre
    ca, cb = a[:15].mean(0), a[15:].mean(0)
    assert (np.linalg.norm(a[:15] - ca, axis=1) < np.linalg.norm(a[:15] - cb, axis=1)).all()
    with pytest.raises(ValueError, match="at least 4"):
        tsne_embedding(x[:3], seed=0)


def test_mmd_compares_against_a_fixed_seeded_sample_of_the_real_images():
    from rdistill.evaluate.features import REAL_MAX, real_sample

    assert torch.equal(real_sample(10), torch.arange(10))
    big = real_sample(10 * REAL_MAX)
    assert len(big) == REAL_MAX and torch.equal(big, real_sample(10 * REAL_MAX)) and torch.equal(big, big.sort().values)
    assert len(set(big.tolist())) == REAL_MAX and int(big.max()) >= REAL_MAX  # drawn from the whole split
