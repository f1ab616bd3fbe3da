"""Streamed evaluation: students read surrogate shards and the real split batch by batch, never whole.

At ImageNet-1K scale a surrogate set (IPC 50: 50 k images, 39 GB as float tensors at 256 px) and the val
split (50 k files, 30 GB) cannot be tensors. Here both are torch Datasets decoded per image in DataLoader
workers, so a cell's memory is a few batches whatever the set's size:
- `PackedSurrogate`: the PNG bytes of a surrogate set's first `ipc` images per class, copied shard by shard
  into one node-local file (`images.bin` + an (N, 3) index of offset, length, label); an image is a seek,
  a read and a PNG decode.
- `FileImages`: a file split (ImageNet val/), each image read and centre-cropped on access.
`train_and_test_streamed` is `training.train_and_test` over DataLoaders: the same optimiser, schedule,
augmentation, CutMix and soft labels (training.train_batches), a seeded shuffle per epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rdistill.evaluate.protocols import Protocol, epochs_for, lr_factor

TEST_BATCH = 256


class PackedSurrogate(torch.utils.data.Dataset):
    """Images (C, S, S) in [-1, 1] and dataset labels of a packed surrogate set, resized to `image_size`."""

    def __init__(self, folder: str, image_size: int | None):
        self.folder, self.image_size = folder, image_size
        self.index = np.load(os.path.join(folder, "index.npy"))  # (N, 3) int64: offset, length, label
        self.labels = torch.from_numpy(self.index[:, 2].copy())

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        from rdistill.data.shards import decode_png

        offset, length, label = (int(v) for v in self.index[i])
        with open(os.path.join(self.folder, "images.bin"), "rb") as f:
            f.seek(offset)
            x = decode_png(f.read(length)).float() / 127.5 - 1.0  # (C, H, W)
        if self.image_size is not None and x.shape[-1] != self.image_size:  # e.g. generated at 256, trained at 224
            x = F.interpolate(x[None], size=(self.image_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)[0]
        return x, label


def pack_surrogate(folder: str, ipc: int, classes: Sequence[str], image_size: int | None,
                   scratch: str | None = None) -> PackedSurrogate:
    """Copy the first `ipc` images of each of `classes` (labelled by their position there) to node-local
    scratch, one shard in memory at a time; reused while the set's manifest is unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rdistill import storage
    from rdistill.data.shards import MANIFEST_NAME, Manifest

    m = Manifest.load(folder)  # a folder or a storage URI
    manifest = storage.read_bytes(storage.join(folder, MANIFEST_NAME))
    digest = hashlib.sha256(manifest + json.dumps([ipc, list(classes)]).encode()).hexdigest()[:16]
    root = scratch or os.environ.get("RDISTILL_SCRATCH") or tempfile.gettempdir()
    out = os.path.join(root, "rdistill-packed", digest)
    if not os.path.isfile(os.path.join(out, "index.npy")):
        os.makedirs(out, exist_ok=True)
        rows, offset, pid = [], 0, os.getpid()
        with open(os.path.join(out, f"images.{pid}.bin"), "wb") as f:  # this process's own until renamed
            for name, s in sorted(m.shards.items()):
                c = m.classes[s["label"]]
                if c not in classes:
                    continue
                shard = pa.BufferReader(storage.read_bytes(storage.join(folder, name)))
                t = pq.read_table(shard, columns=["image", "index"], filters=[("index", "<", ipc)]).sort_by("index")
                for png in t["image"].combine_chunks().field("bytes").to_pylist():
                    f.write(png)
                    rows.append((offset, len(png), classes.index(c)))
                    offset += len(png)
        os.replace(os.path.join(out, f"images.{pid}.bin"), os.path.join(out, "images.bin"))  # as any packer writes
        tmp = os.path.join(out, f"index.{pid}.npy")
        np.save(tmp, np.asarray(rows, dtype=np.int64).reshape(-1, 3))
        os.replace(tmp, os.path.join(out, "index.npy"))  # written last: its presence marks a finished pack
    return PackedSurrogate(out, image_size)


class FileImages(torch.utils.data.Dataset):
    """A split read per image (files centre-cropped on access, or in-memory pixels): (C, S, S) in [-1, 1], label."""

    def __init__(self, split):
        self.split, self.labels = split, split.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.split.images([i])[0], int(self.labels[i])


def loader(data: torch.utils.data.Dataset, batch_size: int, *, shuffle_seed: int | None = None,
           workers: int = 0) -> torch.utils.data.DataLoader:
    """Batches of `data`; shuffled by a generator seeded with `shuffle_seed` (None: in order)."""
    g = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=g is not None, generator=g,
                                       num_workers=workers, persistent_workers=False)


def train_and_test_streamed(student_name: str, protocol: Protocol, train_set, test_set, *, num_classes: int,
                            seed: int, device: str = "cpu", epochs: int | None = None, teacher=None,
                            workers: int = 0, eval_every: int | None = None) -> dict:
    """As training.train_and_test, over Datasets read in batches (memory flat in their size)."""
    from rdistill.evaluate.training import build_optimizer, evaluate_batches, train_batches
    from rdistill.models.students import build_student

    if (protocol.soft_labels is not None) != (teacher is not None):
        raise ValueError(f"protocol {protocol.name!r} has soft_labels={protocol.soft_labels}: pass a teacher exactly when it is set")
    labels = train_set.labels
    ipc = int(torch.bincount(labels, minlength=num_classes).max())
    epochs = epochs if epochs is not None else epochs_for(protocol, ipc)
    eval_every = eval_every or max(1, round(epochs / 10))
    g = torch.Generator().manual_seed(seed)
    x0, _ = train_set[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_student(student_name, num_classes, x0.shape[0], x0.shape[-1]).to(device)
    optimizer = build_optimizer(model, protocol)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(protocol, e, epochs))
    teacher = teacher.to(device).eval() if teacher is not None else None
    start, history = time.perf_counter(), []
    for epoch in range(1, epochs + 1):
        batches = ((x.to(device), y.to(device)) for x, y in
                   loader(train_set, protocol.batch_size, shuffle_seed=seed * 100_003 + epoch, workers=workers))
        train_batches(model, optimizer, protocol, batches, num_classes, g, teacher)
        scheduler.step()
        if epoch % eval_every == 0 or epoch == epochs:
            acc = evaluate_batches(model, loader(test_set, TEST_BATCH, workers=workers), device, protocol)
            history.append((epoch, acc))
    return dict(final_acc=history[-1][1], best_acc=max(a for _, a in history), epochs=epochs, history=history,
                seconds=time.perf_counter() - start, model=model)
