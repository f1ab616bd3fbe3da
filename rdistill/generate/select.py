"""Coreset baselines: IPC real training images per class, written as a surrogate set (rdistill.data.shards).

    manifest = select_coreset(load_dataset("digits"), "herding", ipc=10, seed=0, out="sets/digits-herding-10")

- random: a seeded permutation of each class (numpy SeedSequence of (seed, class)).
- herding (Welling 2009): greedily add the image that brings the mean of the chosen features closest to
  the class mean.
- kcenter (greedy farthest point, as in the dataset-condensation benchmarks): the first center is the image
  closest to the class mean; then, repeatedly, the image farthest from its nearest chosen center.
Herding and k-center work on features of a FIXED embedding network: a randomly initialised ConvNet
(rdistill.models.students, depth by resolution: ConvNet-3 up to 32 px) built under torch seed 0, no
downloads; or on raw pixels (`features="pixels"`). The manifest's config names which ("convnet-3-random-seed0").

All three are greedy orders, so the selection of a smaller IPC is a prefix of a larger one; a shard row's
`index` is its rank in that order. One shard per class; `config["selected"]` holds the chosen train indices.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from rdistill.common.seeds import STREAM_CORESET, derive
from rdistill.data.base import Dataset, Split
from rdistill.data.shards import Manifest, check_overwrite, shard_is_complete, shard_name, shard_row, write_shard

METHODS = ("random", "herding", "kcenter")
FEATURES = ("convnet", "pixels")
EMBED_SEED = 0  # torch seed of the fixed random ConvNet
FEATURE_BATCH = 256  # images per forward of the embedding network


# The selection rules, on one class's features (N, D):


def herding(f: torch.Tensor, k: int) -> list[int]:
    """Greedy mean matching: pick i minimising || mu - (sum of chosen + f_i) / t ||, t = 1..k."""
    f = f.double()
    mu = f.mean(0)  # (D,)
    chosen, total = [], torch.zeros_like(mu)
    free = torch.ones(len(f), dtype=torch.bool)
    for t in range(1, k + 1):
        d = ((mu - (total + f) / t) ** 2).sum(1)  # (N,)
        d[~free] = float("inf")
        i = int(torch.argmin(d))  # ties: the lowest index
        chosen.append(i)
        free[i] = False
        total += f[i]
    return chosen


def k_center(f: torch.Tensor, k: int) -> list[int]:
    """Greedy farthest point: first the point closest to the mean, then the farthest from its nearest center."""
    f = f.double()
    first = int(torch.argmin(((f - f.mean(0)) ** 2).sum(1)))
    chosen = [first]
    nearest = ((f - f[first]) ** 2).sum(1)  # (N,) squared distance to the nearest center
    for _ in range(k - 1):
        i = int(torch.argmax(nearest))  # ties: the lowest index; chosen points have distance 0
        chosen.append(i)
        nearest = torch.minimum(nearest, ((f - f[i]) ** 2).sum(1))
    return chosen


def random_order(n: int, k: int, seed: int, label: int) -> list[int]:
    """The first k of a permutation of range(n) seeded by (seed, label)."""
    return np.random.default_rng(derive(seed, STREAM_CORESET, label)).permutation(n)[:k].tolist()


# Features:


def embedding(features: str, dataset: Dataset):
    """(name, images (N, C, S, S) in [-1, 1] -> features (N, D)) of the fixed embedding."""
    if features == "pixels":
        return "pixels", lambda x: x.flatten(1)
    if features != "convnet":
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    from rdistill.models.students import build_student, convnet_depth, feature_extractor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EMBED_SEED)
        net = build_student("convnet", dataset.num_classes, dataset.channels, dataset.image_size).eval()
    return f"convnet-{convnet_depth(dataset.image_size)}-random-seed{EMBED_SEED}", feature_extractor(net)


@torch.no_grad()
def class_features(split: Split, idx: torch.Tensor, embed) -> torch.Tensor:
    """Features (N, D) float32 of the images split[idx], in batches."""
    return torch.cat([embed(split.images(b)).float().flatten(1) for b in idx.split(FEATURE_BATCH)])


def select_indices(split: Split, k: int, method: str, ipc: int, seed: int, embed) -> list[int]:
    """Train-split indices of class k's IPC picks, in selection order."""
    idx = split.indices_of(k)  # (N_k,)
    if method == "random":
        order = random_order(len(idx), ipc, seed, k)
    else:
        f = class_features(split, idx, embed)  # (N_k, D)
        order = herding(f, ipc) if method == "herding" else k_center(f, ipc)
    return idx[order].tolist()


# The set:


def check_request(dataset: Dataset, method: str, ipc: int, features: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    counts = torch.bincount(dataset.train.labels, minlength=dataset.num_classes).tolist()
    short = [(dataset.classes[k], n) for k, n in enumerate(counts) if n < ipc]
    if short:
        raise ValueError(f"ipc={ipc} is more than these classes have training images (class, count): {short}")


def _pixels(split: Split, i: int) -> torch.Tensor:
    """(C, S, S): stored uint8 pixels as they are, files as read (float in [-1, 1])."""
    return split.pixels[i] if split.pixels is not None else split.images([i])[0]


def select_coreset(dataset: Dataset, method: str, ipc: int, seed: int, out, overwrite: bool = False,
                   features: str = "convnet", progress: bool = False) -> Manifest:
    """Write IPC training images per class, chosen by `method`, as a surrogate set in `out`."""
    check_request(dataset, method, ipc, features)
    name, embed = embedding("pixels" if method == "random" else features, dataset)
    split, source = dataset.train, f"real:{dataset.name}"
    picks = {}
    for k in tqdm(range(dataset.num_classes), desc=f"select {method}", disable=not progress):
        picks[dataset.classes[k]] = select_indices(split, k, method, ipc, seed, embed)

    features_used = None if method == "random" else name
    config = {"dataset": dataset.name, "image_size": dataset.image_size, "selection": method,
              "features": features_used, "seed": seed, "selected": picks}
    fresh = Manifest(list(dataset.classes), list(dataset.model_labels), ipc, method, source, config=config)
    manifest = check_overwrite(out, fresh.fingerprint(), overwrite) or fresh
    manifest.save(out)  # a storage location (rdistill.storage): a local folder or a URI
    for k, cls in enumerate(dataset.classes):
        s = manifest.shards.get(shard_name(k, 0))
        if s and shard_is_complete(out, shard_name(k, 0), s["rows"], s["sha256"]):
            continue
        rows = [shard_row(_pixels(split, i), k, cls, seed, j, source) for j, i in enumerate(picks[cls])]
        manifest.record(write_shard(out, rows, shard_name(k, 0), classes=dataset.classes), k, 0)
        manifest.save(out)
    return manifest
