"""The features of a surrogate set and of the real train split under one fixed network: MMD between them
(Table 2, rdistill.evaluate.metrics) and the inputs of the t-SNE plot (Fig. 3).

The network is the first student trained on the full split (seed 0) when `full` is evaluated, otherwise a
randomly initialised ConvNet (torch seed FEATURE_SEED), the embedding herding and k-center select with,
which flatters them; `Features.network` says which, and against how many real images: a seeded sample of at
most REAL_MAX, so the cost does not grow with the dataset (O(n^2) kernels over ImageNet would not fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rdistill.common.devices import resolve_device
from rdistill.common.seeds import STREAM_MMD, derive
from rdistill.evaluate.cells import DataSpec, load_data, train_tensors

FEATURE_SEED = 0  # torch seed of the random-init ConvNet feature network (as rdistill.generate.select)
FEATURE_BATCH = 512  # images per forward when extracting features
REAL_MAX = 2000  # real train images MMD and t-SNE compare against (a seeded sample; all if fewer)


@dataclass(frozen=True)
class Features:
    network: str  # which fixed network produced them
    real: torch.Tensor  # (N, D) the real train split
    real_labels: torch.Tensor  # (N,)
    sets: dict  # (method, ipc) -> (features (n, D), labels (n,)) of its first draw
    mmd: dict  # (method, ipc) -> {"linear": float, "rbf": float}, the mean over its draws


def feature_network(data: DataSpec, student: str | None, state: dict | None):
    """(description, network): the trained full-data student if given, else a random-init ConvNet."""
    from rdistill.models.students import build_student, convnet_depth

    d = load_data(data)
    if state is not None:
        net = build_student(student, d.num_classes, d.channels, d.image_size)
        net.load_state_dict(state)
        return f"{student} trained on the full train split (seed 0)", net
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FEATURE_SEED)
        net = build_student("convnet", d.num_classes, d.channels, d.image_size)
    return f"convnet-{convnet_depth(d.image_size)}, random init (torch seed {FEATURE_SEED})", net


def compute_features(data: DataSpec, sets: list[tuple[str, int, str]], student: str | None, state: dict | None,
                     device: str = "auto") -> Features:
    """Features of the real train split (a seeded sample of at most REAL_MAX images) and of each
    (method, ipc, folder) set, and the MMD between them (averaged over the draws of a (method, ipc))."""
    from rdistill.evaluate.metrics import features, mmd

    name, net = feature_network(data, student, state)
    net = net.to(resolve_device(device))
    train = load_data(data).train
    idx = real_sample(len(train))
    real = torch.cat([features(net, train.images(i)) for i in idx.split(FEATURE_BATCH)])  # (n, D)
    out, dist = {}, {}
    for method, ipc, folder in sets:  # several folders of one (method, ipc): its draws
        if load_data(data).train.paths is not None:  # a folder dataset: the set streamed, never whole
            from rdistill.evaluate.streams import loader, pack_surrogate

            s = pack_surrogate(folder, ipc, load_data(data).classes, load_data(data).image_size)
            f, y = torch.cat([features(net, x, FEATURE_BATCH) for x, _ in loader(s, FEATURE_BATCH)]), s.labels
        else:
            x, y = train_tensors(data, folder, ipc)
            f = features(net, x, FEATURE_BATCH)
        out.setdefault((method, ipc), (f, y))  # the first draw's, for the t-SNE plot
        dist.setdefault((method, ipc), []).append({k: mmd(f, real, kernel=k) for k in ("linear", "rbf")})
    dist = {key: {k: sum(d[k] for d in ds) / len(ds) for k in ("linear", "rbf")} for key, ds in dist.items()}
    return Features(f"{name}; {len(idx)} of {len(train)} real train images", real, train.labels[idx], out, dist)


def real_sample(n: int) -> torch.Tensor:
    """Sorted indices of at most REAL_MAX of n images, seeded: MMD's cost stays fixed as the split grows."""
    if n <= REAL_MAX:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive(FEATURE_SEED, STREAM_MMD))
    return torch.randperm(n, generator=g)[:REAL_MAX].sort().values
