"""The `rded` protocol's teacher: a ResNet-18 trained on the real training split, streamed batch by batch.

RDED (and so the paper's ImageNet-1K column) labels the surrogate images with a torchvision ResNet-18 trained
on ImageNet-1K. `rdistill evaluate --teacher` takes such a state_dict (torchvision and timm name the layers
alike); `train_teacher` makes one when there is none, with torchvision's reference recipe, on the same
streams the students use (rdistill.evaluate.streams), and publishes it to storage.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from urllib.parse import urlsplit, urlunsplit

import torch

from rdistill import storage
from rdistill.evaluate.protocols import Protocol

# torchvision's classification reference for ResNet-18: SGD lr 0.1 (batch 256), momentum 0.9, wd 1e-4,
# lr x0.1 every 30 of 90 epochs, random-resized-crop 224 + flip, ImageNet mean/std.
TEACHER_RECIPE = Protocol(
    name="teacher", students=("resnet-18",), optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
    decay_weights_only=False, batch_size=256, schedule="multistep", milestones=(1 / 3, 2 / 3), gamma=0.1,
    epochs=90, epochs_by_ipc=(), rrc_scale=(0.08, 1.0), flip=True, color_jitter=0.0, lighting=0.0,
    cutmix_prob=0.0, cutmix_beta=1.0, soft_labels=None, image_size=224, input_norm="imagenet",
)


def train_teacher(dataset: str, root: str | None, out: str, *, image_size: int | None = 224, epochs: int = 90,
                  batch_size: int = 256, seed: int = 0, device: str = "cpu", workers: int = 4) -> dict:
    """Train the teacher on `dataset`'s train split, test it on its test split, publish the state_dict at
    `out` (a file path or URI) and `out`.json (recipe, accuracy). Returns that record."""
    from dataclasses import asdict, replace

    from rdistill.data import load_dataset
    from rdistill.evaluate.streams import FileImages, train_and_test_streamed

    d = load_dataset(dataset, image_size=image_size, root=root)
    recipe = replace(TEACHER_RECIPE, epochs=epochs, batch_size=batch_size, image_size=d.image_size,
                     lr=TEACHER_RECIPE.lr * batch_size / 256)  # linear scaling (Goyal et al. 2017)
    r = train_and_test_streamed("resnet-18", recipe, FileImages(d.train), FileImages(d.test),
                                num_classes=d.num_classes, seed=seed, device=device, workers=workers)
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in r["model"].state_dict().items()}, buf)
    storage.write_bytes(out, buf.getvalue())
    record = {"dataset": dataset, "classes": list(d.classes), "final_acc": r["final_acc"], "best_acc": r["best_acc"],
              "epochs": r["epochs"], "seconds": round(r["seconds"], 1), "recipe": asdict(recipe)}
    storage.write_text(with_suffix(out, ".json"), json.dumps(record, indent=1, default=str))
    return record


def with_suffix(location: str, suffix: str) -> str:
    """location + suffix, inside a URI's path (before any ?query)."""
    if not storage.is_uri(location):
        return location + suffix
    u = urlsplit(location)
    return urlunsplit(u._replace(path=u.path + suffix))


def parent_of(location: str) -> str:
    """The folder a file location is in (a URI keeps its scheme and query)."""
    if not storage.is_uri(location):
        return os.path.dirname(os.path.abspath(location))
    u = urlsplit(location)
    return urlunsplit(u._replace(path=posixpath.dirname(u.path)))
