"""Evaluation protocols: how a student is trained on a surrogate set and tested (SPEC.md section 5).

Three presets by name:
- `idc`: the hard-label protocol of IDC used for the ImageNet subsets (Tables 1 and 3).
- `rded`: the soft-label protocol of RDED used for ImageNet-1K (Table 4).
- `small`: the classic dataset-distillation protocol for MNIST-sized images (ConvNet-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SoftLabels:
    """Train on a teacher's softened predictions instead of the hard labels (knowledge distillation)."""

    temperature: float  # targets = softmax(teacher_logits / T); loss = KL(targets || softmax(student / T))
    t_squared: bool = False  # multiply the KL loss by T^2 (Hinton); RDED does not (validation/main.py)


@dataclass(frozen=True)
class Protocol:
    name: str
    students: tuple[str, ...]  # the students the protocol is reported with
    # Optimiser
    optimizer: str  # "sgd" | "adamw"
    lr: float
    momentum: float  # SGD only
    weight_decay: float
    decay_weights_only: bool  # True: no weight decay on biases and norm parameters (RDED's grouping)
    batch_size: int
    # Learning-rate schedule, stepped once per epoch
    schedule: str  # "multistep" | "cosine" | "cosine_full"; see lr_factor
    milestones: tuple[float, ...]  # multistep: fractions of the epochs where lr is multiplied by gamma
    gamma: float
    # Epochs: a fixed count, or by images per class (first (max_ipc, epochs) with ipc <= max_ipc; None = any)
    epochs: int | None
    epochs_by_ipc: tuple[tuple[int | None, int], ...]
    # Augmentation, per image (drawn from the run's seeded generator)
    rrc_scale: tuple[float, float] | None  # random-resized-crop area range; None = no crop
    flip: bool  # random horizontal flip
    color_jitter: float  # brightness / contrast / saturation strength (IDC 0.4); 0 = off
    lighting: float  # std of the AlexNet PCA lighting noise (IDC 0.1); 0 = off
    # CutMix, per batch
    cutmix_prob: float  # probability that a batch is cut-mixed
    cutmix_beta: float  # lambda ~ Beta(beta, beta)
    soft_labels: SoftLabels | None
    image_size: int | None  # the resolution the student trains and tests at; None = the data's own
    input_norm: str | None = None  # "imagenet": networks see ImageNet mean/std normalised RGB; None: [-1, 1]

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs is None and (not self.epochs_by_ipc or self.epochs_by_ipc[-1][0] is not None):
            raise ValueError(f"protocol {self.name!r}: no fixed epochs and no catch-all (None, epochs) rule")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.input_norm not in (None, "imagenet"):
            raise ValueError(f"input_norm must be None or 'imagenet', got {self.input_norm!r}")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise ValueError(f"cutmix_prob must be in [0, 1], got {self.cutmix_prob}")


SCHEDULES = ("multistep", "cosine", "cosine_full")

# IDC argument.py ipc_epoch(): 1 -> 3000, <=10 -> 2000, <=50 -> 1500, <=200 -> 1000, <=500 -> 500, else 300
IDC_EPOCHS_BY_IPC = ((1, 3000), (10, 2000), (50, 1500), (200, 1000), (500, 500), (None, 300))

PROTOCOLS = {
    "idc": Protocol(
        name="idc",
        students=("convnet-6", "resnetap-10", "resnet-18"),  # Table 1
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        decay_weights_only=False,
        batch_size=64,
        schedule="multistep",
        milestones=(2 / 3, 5 / 6),  # IDC: MultiStepLR at [2E//3, 5E//6]
        gamma=0.2,
        epochs=None,
        epochs_by_ipc=IDC_EPOCHS_BY_IPC,
        rrc_scale=(0.5, 1.0),
        flip=True,
        color_jitter=0.4,  # IDC data.py ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
        lighting=0.1,  # IDC data.py Lighting(alphastd=0.1)
        cutmix_prob=1.0,  # IDC mix_p = 1 for ImageNet: every batch
        cutmix_beta=1.0,
        soft_labels=None,
        image_size=224,
    ),
    "rded": Protocol(
        name="rded",
        students=("resnet-18",),  # Table 4
        optimizer="adamw",
        lr=1e-3,
        momentum=0.0,
        weight_decay=0.01,
        decay_weights_only=True,  # RDED get_parameters(): decay only weight matrices
        batch_size=100,  # RDED argument.py for ImageNet-1K IPC 10 (it uses 200 at IPC 50)
        schedule="cosine",
        milestones=(),
        gamma=1.0,
        epochs=300,
        epochs_by_ipc=(),
        rrc_scale=(0.08, 1.0),
        flip=True,
        color_jitter=0.0,
        lighting=0.0,
        cutmix_prob=1.0,  # RDED mix_type "cutmix" on every batch
        cutmix_beta=1.0,
        soft_labels=SoftLabels(temperature=20.0),  # RDED: T = 20 with CutMix
        image_size=224,
        input_norm="imagenet",  # RDED normalises with the ImageNet mean/std (torchvision ResNet-18 teacher)
    ),
    "small": Protocol(
        name="small",
        students=("convnet-3",),
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        decay_weights_only=False,
        batch_size=256,  # DC batch_train
        schedule="multistep",
        milestones=(0.5,),  # DC evaluate_synset: lr x 0.1 at half the epochs
        gamma=0.1,
        epochs=300,  # DC's default epoch_eval_train (DSA/DM later used 1000); SPEC allows 300-1000
        epochs_by_ipc=(),
        rrc_scale=None,
        flip=False,  # digits and letters are not mirror-symmetric
        color_jitter=0.0,
        lighting=0.0,
        cutmix_prob=0.0,
        cutmix_beta=1.0,
        soft_labels=None,
        image_size=None,
    ),
}


def get_protocol(name: str, epochs: int | None = None) -> Protocol:
    """The preset `name`; `epochs` (if given) replaces its epoch rule and is recorded in the result."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}: choose one of {sorted(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    return protocol if epochs is None else replace(protocol, epochs=epochs)


def epochs_for(protocol: Protocol, ipc: int) -> int:
    """Training epochs for a surrogate set of `ipc` images per class."""
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    if protocol.epochs is not None:
        return protocol.epochs
    for max_ipc, epochs in protocol.epochs_by_ipc:
        if max_ipc is None or ipc <= max_ipc:
            return epochs
    raise AssertionError("unreachable: __post_init__ requires a catch-all rule")


def milestone_epochs(protocol: Protocol, epochs: int) -> list[int]:
    """Epoch indices where a multistep schedule decays: floor(fraction * epochs), as IDC's 2E//3, 5E//6."""
    return [math.floor(f * epochs + 1e-9) for f in protocol.milestones]


def lr_factor(protocol: Protocol, epoch: int, epochs: int) -> float:
    """Multiplier of the base lr during 0-based `epoch` of `epochs`.

    multistep: gamma ** (number of milestones <= epoch), torch's MultiStepLR.
    cosine: RDED's schedule, 0.5 * (1 + cos(pi * epoch / epochs / 2)): a quarter wave from 1 to ~0.5,
      which is what the reference ran (validation/main.py).
    cosine_full: the usual cosine annealing from 1 towards 0 (a named departure from RDED).
    """
    if protocol.schedule == "multistep":
        return protocol.gamma ** sum(epoch >= m for m in milestone_epochs(protocol, epochs))
    if protocol.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs / 2))
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
