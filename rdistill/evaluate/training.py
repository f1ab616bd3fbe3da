"""Train a student on a (surrogate) training set and test it on the real test split (SPEC.md section 5).

One plain function, `train_and_test`, for one CPU or GPU process. Every random draw (initialisation,
shuffling, augmentation, CutMix) comes from `seed`, so a run repeats exactly on the same machine.
Images are float tensors in [-1, 1], (N, C, H, W); the teacher (soft-label mode) sees the same tensors.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from scipy.special import betaincinv
from torch import nn
from tqdm import tqdm

from rdistill.models.students import build_student
from rdistill.evaluate.protocols import Protocol, epochs_for, lr_factor

TEST_BATCH = 256  # images per forward pass when testing
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, IDC's Grayscale
# ImageNet RGB PCA of AlexNet (Krizhevsky et al. 2012), the constants in IDC's data.py Lighting
LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
LIGHTING_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def train_and_test(
    student_name: str,
    protocol: Protocol,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    seed: int,
    device: str = "cpu",
    epochs: int | None = None,
    teacher: nn.Module | None = None,
    progress: bool = False,
    eval_every: int | None = None,
) -> dict:
    """Train `student_name` under `protocol`; test accuracy (%) every `eval_every` epochs and at the end.

    Returns final_acc (after the last epoch), best_acc (the maximum over the tests, what the reference
    reports), epochs, history [(epoch, acc), ...], seconds and model (the trained student, on `device`). `epochs` defaults to the protocol's rule
    for the set's images per class (the largest class count).
    """
    # Setup:
    _check_inputs(protocol, train_images, train_labels, test_images, num_classes, teacher, eval_every)
    ipc = int(torch.bincount(train_labels, minlength=num_classes).max())
    epochs = epochs if epochs is not None else epochs_for(protocol, ipc)
    eval_every = eval_every or max(1, round(epochs / 10))
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_student(student_name, num_classes, train_images.shape[1], train_images.shape[-1])
    model = model.to(device)
    optimizer = build_optimizer(model, protocol)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(protocol, e, epochs))
    if teacher is not None:
        teacher = teacher.to(device).eval()
    train_images, train_labels = train_images.to(device), train_labels.to(device)

    # Train, testing now and then:
    start, history = time.perf_counter(), []
    bar = tqdm(range(1, epochs + 1), desc=student_name, disable=not progress)
    for epoch in bar:
        train_epoch(model, optimizer, protocol, train_images, train_labels, num_classes, g, teacher)
        scheduler.step()
        if epoch % eval_every == 0 or epoch == epochs:
            history.append((epoch, evaluate(model, test_images, test_labels, device, protocol)))
            bar.set_postfix(acc=history[-1][1])
    return dict(
        final_acc=history[-1][1],
        best_acc=max(acc for _, acc in history),
        epochs=epochs,
        history=history,
        seconds=time.perf_counter() - start,
        model=model,
    )


def _check_inputs(protocol, train_images, train_labels, test_images, num_classes, teacher, eval_every) -> None:
    if train_images.ndim != 4 or not train_images.is_floating_point():
        shape = tuple(train_images.shape)
        raise ValueError(f"train_images must be float (N, C, H, W), got {train_images.dtype} {shape}")
    if train_images.shape[1:] != test_images.shape[1:]:
        shapes = tuple(train_images.shape[1:]), tuple(test_images.shape[1:])
        raise ValueError(f"train images {shapes[0]} != test images {shapes[1]}")
    size = train_images.shape[-1]
    if protocol.image_size is not None and size != protocol.image_size:
        raise ValueError(
            f"protocol {protocol.name!r} trains at {protocol.image_size}px, images are {size}px: read them at that size"
        )
    if len(train_labels) == 0 or len(train_labels) != len(train_images):
        raise ValueError(f"{len(train_images)} training images with {len(train_labels)} labels: need a non-empty set")
    if train_labels.min() < 0 or train_labels.max() >= num_classes:
        span = f"{int(train_labels.min())}..{int(train_labels.max())}"
        raise ValueError(f"train labels must be in [0, {num_classes}), got {span}")
    if (protocol.soft_labels is not None) != (teacher is not None):
        raise ValueError(
            f"protocol {protocol.name!r} has soft_labels={protocol.soft_labels}: pass a teacher exactly when it is set"
        )
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1 (or None for ~10 tests per run), got {eval_every}")


def build_optimizer(model: nn.Module, protocol: Protocol) -> torch.optim.Optimizer:
    params = model.parameters()
    if protocol.decay_weights_only:  # biases and norm scales (1-d) without weight decay
        ps = list(model.parameters())
        params = [
            {"params": [p for p in ps if p.ndim > 1]},
            {"params": [p for p in ps if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(params, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    return torch.optim.AdamW(params, lr=protocol.lr, betas=(0.9, 0.999), weight_decay=protocol.weight_decay)


def train_epoch(model, optimizer, protocol, images, labels, num_classes, g, teacher) -> None:
    """One pass over the training set in shuffled batches (the last one may be smaller)."""
    order = [idx.to(images.device) for idx in torch.randperm(len(images), generator=g).split(protocol.batch_size)]
    train_batches(model, optimizer, protocol, ((images[idx], labels[idx]) for idx in order), num_classes, g, teacher)


def train_batches(model, optimizer, protocol, batches, num_classes, g, teacher) -> None:
    """One optimiser step per (images (B, C, H, W), labels (B,)) batch: augment, CutMix, loss (a tensor set's
    epoch and a streamed one, rdistill.evaluate.streams, share it)."""
    model.train()
    for images, labels in batches:
        x = augment(images, protocol, g)  # (B, C, H, W)
        targets = F.one_hot(labels, num_classes).float()  # (B, K)
        if protocol.cutmix_prob > 0 and torch.rand(1, generator=g).item() < protocol.cutmix_prob:
            x, targets = cutmix(x, targets, protocol.cutmix_beta, g)
        x = normalize_input(x, protocol)
        logits = model(x)
        if teacher is None:
            loss = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()  # CE against the mixed labels
        else:
            loss = distillation_loss(logits, teacher, x, protocol.soft_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def distillation_loss(logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, soft) -> torch.Tensor:
    """KL(softmax(teacher(x) / T) || softmax(logits / T)), batch mean; the teacher labels the mixed image."""
    t = soft.temperature
    with torch.no_grad():
        targets = F.softmax(teacher(x) / t, dim=1)  # (B, K)
    loss = F.kl_div(F.log_softmax(logits / t, dim=1), targets, reduction="batchmean")
    return loss * t**2 if soft.t_squared else loss


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: str = "cpu",
             protocol: Protocol | None = None) -> float:
    """Top-1 accuracy in % over (N, C, H, W) images, in batches of TEST_BATCH."""
    if len(labels) == 0:
        raise ValueError("the test set is empty")
    return evaluate_batches(model, zip(images.split(TEST_BATCH), labels.split(TEST_BATCH)), device, protocol)


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches, device: str = "cpu", protocol: Protocol | None = None) -> float:
    """Top-1 accuracy in % over (images, labels) batches (a tensor split's, or a DataLoader's)."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += (model(normalize_input(x.to(device), protocol)).argmax(1).cpu() == y).sum().item()
        total += len(y)
    if total == 0:
        raise ValueError("the test set is empty")
    return 100.0 * correct / total


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet models


def normalize_input(x: torch.Tensor, protocol: Protocol | None) -> torch.Tensor:
    """What the protocol's networks take: x in [-1, 1] as is, or ImageNet mean/std normalised (`rded`: the
    torchvision / timm ResNet-18 teacher was trained on such inputs)."""
    if protocol is None or protocol.input_norm is None:
        return x
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


# Augmentation (IDC order: crop -> flip -> colour jitter -> lighting), per image.


def augment(x: torch.Tensor, protocol: Protocol, g: torch.Generator) -> torch.Tensor:
    """The protocol's per-image augmentations of a batch (B, C, H, W) in [-1, 1]; colour only for RGB."""
    if protocol.rrc_scale is not None or protocol.flip:
        x = crop_and_flip(x, protocol.rrc_scale, protocol.flip, g)
    if x.shape[1] == 3 and (protocol.color_jitter > 0 or protocol.lighting > 0):
        x01 = (x + 1) / 2  # jitter and lighting are defined on [0, 1] pixels
        if protocol.color_jitter > 0:
            x01 = color_jitter(x01, protocol.color_jitter, g)
        if protocol.lighting > 0:
            x01 = lighting(x01, protocol.lighting, g)
        x = x01 * 2 - 1
    return x


def random_resized_crop_boxes(n: int, h: int, w: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes (top, left, height, width), torchvision's RandomResizedCrop draw (ratio 3/4..4/3).

    Ten attempts per image; an image with none inside falls back to the whole image.
    """
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, 10, generator=g))
    aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(n, 10, generator=g))
    cw, ch = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    ok = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)  # (n, 10)
    first = ok.int().argmax(1, keepdim=True)
    cw = torch.where(ok.any(1), cw.gather(1, first)[:, 0], torch.tensor(float(w)))
    ch = torch.where(ok.any(1), ch.gather(1, first)[:, 0], torch.tensor(float(h)))
    top = (torch.rand(n, generator=g) * (h - ch + 1)).floor()
    left = (torch.rand(n, generator=g) * (w - cw + 1)).floor()
    return torch.stack([top, left, ch, cw], dim=1)


def crop_and_flip(x: torch.Tensor, scale, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random-resized-crop (bilinear, back to the input size) and horizontal flip, as one resampling."""
    n, _, h, w = x.shape
    if scale is not None:
        top, left, ch, cw = random_resized_crop_boxes(n, h, w, scale, g).unbind(1)
    else:
        top, left, ch, cw = torch.zeros(n), torch.zeros(n), torch.full((n,), float(h)), torch.full((n,), float(w))
    sign = 1 - 2 * (torch.rand(n, generator=g) < 0.5).float() if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)  # maps output coordinates in [-1, 1] to input coordinates
    theta[:, 0, 0], theta[:, 0, 2] = sign * cw / w, (2 * left + cw) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch / h, (2 * top + ch) / h - 1
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x01: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of (N, 3, H, W) RGB."""
    return (x01 * torch.tensor(GRAY, device=x01.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def color_jitter(x01: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """IDC's ColorJitter: brightness, contrast, saturation in random order (drawn per batch), each
    x <- x + a * (target - x) with a ~ U(-strength, strength) per image; no clipping, as in IDC."""
    n = len(x01)
    for op in torch.randperm(3, generator=g).tolist():
        a = ((2 * torch.rand(n, generator=g) - 1) * strength).view(n, 1, 1, 1).to(x01)
        if op == 0:
            target = torch.zeros_like(x01)  # brightness
        elif op == 1:
            target = grayscale(x01).mean(dim=(1, 2, 3), keepdim=True)  # contrast: toward the mean gray
        else:
            target = grayscale(x01)  # saturation: toward the gray image
        x01 = x01 + a * (target - x01)
    return x01


def lighting(x01: torch.Tensor, alpha_std: float, g: torch.Generator) -> torch.Tensor:
    """AlexNet PCA lighting noise: add eigvec @ (alpha * eigval), alpha ~ N(0, alpha_std) per image."""
    alpha = torch.randn(len(x01), 3, generator=g) * alpha_std  # (N, 3)
    rgb = (alpha * torch.tensor(LIGHTING_EIGVAL)) @ torch.tensor(LIGHTING_EIGVEC).T  # (N, 3)
    return x01 + rgb.to(x01).view(-1, 3, 1, 1)


def cutmix(x: torch.Tensor, targets: torch.Tensor, beta: float, g: torch.Generator):
    """CutMix (IDC's rand_bbox): one box per batch pasted from a shuffled batch; labels mixed by area.

    Returns the mixed images (B, C, H, W) and targets (B, K) whose rows still sum to 1.
    """
    n, _, h, w = x.shape
    lam = float(betaincinv(beta, beta, torch.rand(1, generator=g).item()))  # lam ~ Beta(beta, beta)
    perm = torch.randperm(n, generator=g).to(x.device)
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = torch.randint(h, (1,), generator=g).item(), torch.randint(w, (1,), generator=g).item()
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    kept = 1 - (y2 - y1) * (x2 - x1) / (h * w)  # share of each image that is still its own
    return x, kept * targets + (1 - kept) * targets[perm]
