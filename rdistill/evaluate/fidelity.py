"""Fidelity of a surrogate set: how often a network trained on the real training split (the judge) assigns an
image to the class it stands for (per class; for generated sets, Shmelkov et al.'s "GAN-test").

    judge, acc = train_judge(DataSpec("fashion-tops"), epochs=3)     # acc: its accuracy on the real test split
    fidelity(judge, DataSpec("fashion-tops"), "sets/minimax/guidance-4", ipc=50)
    # {"all": 71.5, "T-shirt/top": 88.0, "Pullover": 70.0, "Coat": 64.0, "Shirt": 64.0}

A set the judge does not recognise teaches its students other labels than its own, however diverse it is;
real images (a coreset) score about the judge's test accuracy, which is the scale to read the others on.
"""

from __future__ import annotations

import torch
from torch import nn

from rdistill.common.devices import resolve_device
from rdistill.evaluate.cells import DataSpec, load_data, train_tensors

JUDGE_BATCH = 500


def train_judge(data: DataSpec, epochs: int, seed: int = 0, device: str = "auto") -> tuple[nn.Module, float]:
    """The `small` protocol's student trained on the whole real train split for `epochs`; (network, its final
    accuracy % on the real test split)."""
    from rdistill.evaluate.protocols import get_protocol
    from rdistill.evaluate.training import train_and_test

    if epochs < 1:
        raise ValueError(f"the judge needs epochs >= 1, got {epochs}")
    protocol, d = get_protocol("small", epochs), load_data(data)
    r = train_and_test(protocol.students[0], protocol, d.train.images(range(len(d.train))), d.train.labels,
                       d.test.images(range(len(d.test))), d.test.labels, num_classes=d.num_classes, seed=seed,
                       device=resolve_device(device), epochs=epochs, eval_every=epochs)
    return r["model"].eval(), r["final_acc"]


@torch.no_grad()
def agreement(predicted: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, float]:
    """% of images predicted as their own label: over all images ("all") and per class (a class with no
    image is left out)."""
    hit = (predicted == labels).float()  # (N,)
    out = {"all": 100.0 * hit.mean().item()}
    for k, name in enumerate(classes):
        mine = labels == k
        if mine.any():
            out[name] = 100.0 * hit[mine].mean().item()
    return out


@torch.no_grad()
def fidelity(judge: nn.Module, data: DataSpec, folder: str, ipc: int | None = None) -> dict[str, float]:
    """The judge's agreement with the labels of the first `ipc` images per class of a surrogate set."""
    x, y = train_tensors(data, folder, ipc)  # (K * ipc, C, H, W), labels as the dataset numbers its classes
    device = next(judge.parameters()).device
    predicted = torch.cat([judge(b.to(device)).argmax(1).cpu() for b in x.split(JUDGE_BATCH)])
    return agreement(predicted, y, list(load_data(data).classes))


def fidelity_table(location: str, sets: dict[str, str], data: DataSpec, ipc: int | None, epochs: int) -> dict:
    """{name: fidelity} of every named set, kept as JSON at `location` (rdistill.storage) with the judge's
    epochs and test accuracy; the judge is trained only when a set is not in the table yet."""
    from rdistill import storage

    table = storage.read_json(location)
    todo = [name for name in sets if name not in table.get("sets", {})]
    if todo:
        judge, acc = train_judge(data, epochs)
        table = {"judge": {"epochs": epochs, "test_acc": acc, "ipc": ipc}, "sets": table.get("sets", {})}
        for name in todo:
            table["sets"][name] = fidelity(judge, data, sets[name], ipc)
        storage.write_json(location, table)
    return table
