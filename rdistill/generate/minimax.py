"""The minimax representativeness and diversity criteria (Eqs. 3-4) and their per-class memories.

For each class c in a batch, with x0_hat the predicted clean latents of its n_c samples (flattened):
    pos_c = 1 - min_{i, m} cos(x0_hat_i, M_c[m])   # pull the least similar real sample closer (Eq. 3)
    neg_c =     max_{i, d} cos(x0_hat_i, D_c[d])   # push away from the most similar prediction (Eq. 4)
both divided by the number of distinct classes in the batch (SPEC.md section 2). M_c holds real latents,
D_c earlier predictions, both detached FIFO queues of N_M entries. The memories are updated only
after the loss is formed, so a batch is never compared with itself.

The Table 5 ablations replace min/max by the cosine to a mean ("without minimax", Eq. 2): the mean of
the class's real latents in the batch for representativeness, the mean of D_c for diversity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MODES = ("minimax", "mean", "off")


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, D), (m, D) -> (n, m) cosine similarities."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def representativeness(x0: torch.Tensor, real: torch.Tensor, mode: str = "minimax") -> torch.Tensor:
    """1 - similarity of the predictions x0 (n, D) to the real latents `real` (m, D): minimax or mean."""
    if mode == "minimax":
        return 1.0 - cosine_matrix(x0, real).min()
    if mode == "mean":
        return 1.0 - F.cosine_similarity(x0, real.mean(0, keepdim=True), dim=1).mean()
    raise ValueError(f"unknown representativeness mode {mode!r}; expected 'minimax' or 'mean'")


def diversity(x0: torch.Tensor, past: torch.Tensor, mode: str = "minimax") -> torch.Tensor:
    """Similarity of the predictions x0 (n, D) to earlier predictions `past` (m, D): minimax or mean."""
    if mode == "minimax":
        return cosine_matrix(x0, past).max()
    if mode == "mean":
        return F.cosine_similarity(x0, past.mean(0, keepdim=True), dim=1).mean()
    raise ValueError(f"unknown diversity mode {mode!r}; expected 'minimax' or 'mean'")


class FifoMemory:
    """A first-in-first-out queue of at most `size` detached vectors of dimension `dim`."""

    def __init__(self, size: int, dim: int):
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        self.size, self.dim = size, dim
        self.items = torch.empty(0, dim)

    def __len__(self) -> int:
        return len(self.items)

    def push(self, x: torch.Tensor) -> None:
        """Append rows of x (n, D); the oldest fall out beyond `size`."""
        x = x.detach().reshape(len(x), -1).to(self.items.device, torch.float32)
        self.items = torch.cat([self.items.to(x.device), x])[-self.size :]


@dataclass(frozen=True)
class CriteriaTerms:
    pos: torch.Tensor  # sum_c pos_c / n_classes (a scalar, 0 when off or memories are empty)
    neg: torch.Tensor  # sum_c neg_c / n_classes


class MinimaxMemory:
    """Per-class memories M (real latents) and D (predictions), keyed by the dataset's class index."""

    def __init__(self, size: int, dim: int, rep: str = "minimax", div: str = "minimax"):
        for name, mode in (("representativeness", rep), ("diversity", div)):
            if mode not in MODES:
                raise ValueError(f"unknown {name} mode {mode!r}; expected one of {MODES}")
        self.size, self.dim, self.rep, self.div = size, dim, rep, div
        self.real: dict[int, FifoMemory] = {}
        self.pred: dict[int, FifoMemory] = {}

    def criteria(self, x0: torch.Tensor, z0: torch.Tensor, labels: torch.Tensor) -> CriteriaTerms:
        """The two terms for a batch: x0 predictions (N, D) with gradients, z0 real latents (N, D)."""
        classes = labels.unique().tolist()
        pos, neg = x0.new_zeros(()), x0.new_zeros(())
        for c in classes:
            D_c = self.pred.get(c)
            if D_c is None or len(D_c) == 0:
                continue  # no earlier prediction of this class yet
            x0_c = x0[labels == c]  # (n_c, D)
            if self.rep == "minimax":
                pos = pos + representativeness(x0_c, self.real[c].items.to(x0), "minimax")
            elif self.rep == "mean":
                pos = pos + representativeness(x0_c, z0[labels == c].to(x0), "mean")
            if self.div != "off":
                neg = neg + diversity(x0_c, D_c.items.to(x0), self.div)
        n = len(classes)
        return CriteriaTerms(pos=pos / n, neg=neg / n)

    def update(self, x0: torch.Tensor, z0: torch.Tensor, labels: torch.Tensor) -> None:
        """Enqueue this step's real latents and predictions, class by class (after the loss)."""
        for c in labels.unique().tolist():
            mask = labels == c
            self.real.setdefault(c, FifoMemory(self.size, self.dim)).push(z0[mask])
            self.pred.setdefault(c, FifoMemory(self.size, self.dim)).push(x0[mask])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors checkpoint: real.<c> and pred.<c>."""
        out = {f"real.{c}": m.items.cpu().contiguous() for c, m in self.real.items()}
        out.update({f"pred.{c}": m.items.cpu().contiguous() for c, m in self.pred.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.real, self.pred = {}, {}
        for key, items in state.items():
            kind, c = key.split(".")
            memory = FifoMemory(self.size, self.dim)
            memory.push(items)
            (self.real if kind == "real" else self.pred)[int(c)] = memory
