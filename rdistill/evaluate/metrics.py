"""How close a surrogate set is to the real data in a network's feature space: MMD and t-SNE.

Table 2 of the paper reports "the MMD between the extracted features of surrogate dataset and the
original one", features from a ResNet-10 (ResNetAP-10) trained on the full dataset; the paper names
no kernel. DM, the method in the same table that "directly sets MMD as the optimization target",
uses the linear kernel: the squared distance between the feature means. `kernel="linear"` is that
quantity; `kernel="rbf"` (Gaussian, median-heuristic bandwidth) is the characteristic-kernel MMD.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.manifold import TSNE
from torch import nn

from rdistill.models.students import feature_extractor

MEDIAN_SAMPLE = 2000  # points used for the median-heuristic bandwidth (pairwise distances are O(n^2))
CHUNK = 2048  # rows of a kernel matrix held at once


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "rbf", bandwidth: float | None = None) -> float:
    """Squared MMD between samples x (N, D) and y (M, D), biased (V-statistic) estimate.

    MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y), every pair including i = j, so
    mmd(x, x) == 0 and the value is never negative; with the linear kernel it is exactly
    ||mean(x) - mean(y)||^2. rbf: k(a, b) = exp(-||a - b||^2 / (2 bandwidth^2)), bandwidth by default
    the median distance between points of x and y pooled.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd needs (N, D) and (M, D) features, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    if kernel == "linear":
        return float(((x.mean(0) - y.mean(0)) ** 2).sum())
    if kernel != "rbf":
        raise ValueError(f"kernel must be 'rbf' or 'linear', got {kernel!r}")
    bandwidth = bandwidth if bandwidth is not None else median_distance(torch.cat([x, y]))
    if bandwidth <= 0:
        raise ValueError(f"rbf bandwidth must be > 0, got {bandwidth}")
    gamma = 1.0 / (2.0 * bandwidth**2)
    kxx, kyy, kxy = (_rbf_mean(a, b, gamma) for a, b in ((x, x), (y, y), (x, y)))
    return max(kxx + kyy - 2.0 * kxy, 0.0)  # clip float round-off below 0


def median_distance(z: torch.Tensor) -> float:
    """Median Euclidean distance between distinct points of z (N, D), on an evenly spaced subsample."""
    if len(z) > MEDIAN_SAMPLE:
        z = z[torch.linspace(0, len(z) - 1, MEDIAN_SAMPLE).long()]
    d = torch.cdist(z, z)  # (n, n)
    d = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]
    d = d[d > 0]
    return float(d.median()) if len(d) else 1.0  # all points equal: any bandwidth gives MMD 0


def _rbf_mean(a: torch.Tensor, b: torch.Tensor, gamma: float) -> float:
    """mean over i, j of exp(-gamma ||a_i - b_j||^2), CHUNK rows at a time."""
    total = sum(torch.exp(-gamma * torch.cdist(rows, b) ** 2).sum() for rows in a.split(CHUNK))
    return float(total) / (len(a) * len(b))


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate features (N, D) of images (N, C, H, W), in eval mode, on the model's device."""
    model.eval()
    extract = feature_extractor(model)
    device = next(model.parameters()).device
    return torch.cat([extract(x.to(device)).float().cpu() for x in images.split(batch_size)])


def tsne_embedding(x: torch.Tensor | np.ndarray, seed: int) -> np.ndarray:
    """2-d t-SNE embedding (N, 2) of features x (N, D); perplexity 30, or less for small N."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    perplexity = min(30.0, (len(x) - 1) / 3)  # sklearn requires perplexity < N
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
