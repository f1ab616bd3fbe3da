"""The minimax representativeness and diversity criteria (Eqs. 3-4) and their per-class memories.

For each class c in a batch, with x0_hat the predicted clean latents of its n_c samples (flattened):
    pos_c = 1 - min_{i, m} cos(x0_hat_i, M_c[m])   # pull the least similar real sample closer (Eq. 3)
    neg_c =     max_{i, d} cos(x0_hat_i, D_c[d])   # push away from the most similar prediction (Eq. 4)
both divided by the number of distinct classes in the batch (SPEC.md section 2). M_c holds real latents,
D_c earlier predictions, both detached FIFO queues of N_M entries (preallocated ring buffers; the rows
the minimax criteria read are stored normalised, so a step normalises only its own batch). The memories
are updated only after the loss is formed, so a batch is never compared with itself. Class grouping uses
the labels on the host: a step never waits for the device.

The Table 5 ablations replace min/max by the cosine to a mean ("without minimax", Eq. 2): the mean of
the class's real latents in the batch for representativeness, the mean of D_c for diversity.

Not in the paper: with a `centre` (the training set's mean latent, train.centred), every vector has it
subtracted before its cosine. What all images share (in pixels, a black background) then no longer makes
any two of them similar, so the criteria measure how images differ, not how much ink they hold.
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


def extreme_pair(xn: torch.Tensor, rows: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Where xn @ rows.T (normalised xn (n, D), normalised rows (m, D)) is largest (or smallest): the row
    index into xn (1,) and a copy of the memory row (1, D). No autograd and no host read: the caller forms
    the one cosine with its gradient (what max/min pass back), so backward never reads the memory."""
    with torch.no_grad():
        s = xn @ rows.T  # (n, m)
        flat = (s.argmax() if largest else s.argmin()).reshape(1)  # (1,), stays on the device
        return flat // s.shape[1], rows.index_select(0, flat % s.shape[1])


def paired_cosines(xn: torch.Tensor, picks: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum over picks (i, row) of cos(xn[i], row), for normalised xn (N, D) with gradients: one gather."""
    if not picks:
        return xn.new_zeros(())
    i = torch.cat([p[0] for p in picks])  # (k,)
    rows = torch.cat([p[1] for p in picks])  # (k, D)
    return (xn.index_select(0, i) * rows).sum()


class FifoMemory:
    """A first-in-first-out queue of at most `size` detached vectors of dimension `dim`, as a ring buffer.

    The buffer is allocated once, on the device of the first push; a push writes its rows in place (no copy of
    the queue). With `normalize`, rows are stored divided by their norm, so cosines need no renormalisation."""

    def __init__(self, size: int, dim: int, normalize: bool = False):
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        self.size, self.dim, self.normalize = size, dim, normalize
        self.buffer: torch.Tensor | None = None  # (size, D) float32, allocated on the first push
        self.count, self.head = 0, 0  # rows held; where the next row goes

    def __len__(self) -> int:
        return self.count

    @property
    def rows(self) -> torch.Tensor:
        """The rows held (count, D), in buffer order (a view: no copy). Order does not matter to min/max/mean."""
        if self.buffer is None:
            return torch.empty(0, self.dim)
        return self.buffer if self.count == self.size else self.buffer[: self.count]

    @property
    def items(self) -> torch.Tensor:
        """The rows held, oldest first (a copy; for checkpoints and tests)."""
        if self.count < self.size:
            return self.rows.clone()
        return torch.cat([self.buffer[self.head :], self.buffer[: self.head]])

    def push(self, x: torch.Tensor, normalized: bool = False) -> None:
        """Append rows of x (n, D); the oldest fall out beyond `size`. `normalized`: x's rows already are."""
        x = x.detach().reshape(len(x), -1)[-self.size :]  # (n, D), at most `size` rows
        if self.buffer is None:
            self.buffer = torch.empty(self.size, self.dim, device=x.device)
        elif self.buffer.device != x.device:  # loaded from a checkpoint on the CPU: follow the model, once
            self.buffer = self.buffer.to(x.device)
        x = x.to(self.buffer.device, torch.float32)
        if self.normalize and not normalized:
            x = F.normalize(x, dim=1)
        n, h = len(x), self.head
        first = min(n, self.size - h)  # rows before the end of the buffer; the rest wrap to its start
        self.buffer[h : h + first] = x[:first]
        self.buffer[: n - first] = x[first:]
        self.head, self.count = (h + n) % self.size, min(self.count + n, self.size)


@dataclass(frozen=True)
class CriteriaTerms:
    pos: torch.Tensor  # sum_c pos_c / n_classes (a scalar, 0 when off or memories are empty)
    neg: torch.Tensor  # sum_c neg_c / n_classes


def class_groups(labels: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """For CPU labels (N,): the order that sorts them and (class, start, end) of each class's run in that order.
    Computed on the host from host labels, so it never waits for the device."""
    if labels.device.type != "cpu":
        raise ValueError(f"class labels must be a CPU tensor (reading {labels.device} labels would wait for the "
                         "device every step): pass the loader's labels")
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    ends = counts.cumsum(0).tolist()
    return order, [(c, e - n, e) for c, n, e in zip(classes.tolist(), counts.tolist(), ends)]


class MinimaxMemory:
    """Per-class memories M (real latents) and D (predictions), keyed by the dataset's class index.

    A memory the minimax criteria read holds normalised rows (each row is normalised once, when pushed)."""

    FORMAT = 2  # checkpoints since ring buffers: minimax memories are stored normalised

    def __init__(self, size: int, dim: int, rep: str = "minimax", div: str = "minimax",
                 centre: torch.Tensor | None = None):
        for name, mode in (("representativeness", rep), ("diversity", div)):
            if mode not in MODES:
                raise ValueError(f"unknown {name} mode {mode!r}; expected one of {MODES}")
        if centre is not None and centre.shape != (dim,):
            raise ValueError(f"the criteria's centre has shape {tuple(centre.shape)}; expected ({dim},)")
        self.size, self.dim, self.rep, self.div = size, dim, rep, div
        self.centre = centre  # (D,) subtracted from every vector before its cosine; None: the paper's vectors
        self.real: dict[int, FifoMemory] = {}
        self.pred: dict[int, FifoMemory] = {}

    def _memory(self, kind: str, c: int) -> FifoMemory:
        store, mode = (self.real, self.rep) if kind == "real" else (self.pred, self.div)
        if c not in store:
            store[c] = FifoMemory(self.size, self.dim, normalize=mode == "minimax")
        return store[c]

    def criteria(self, x0: torch.Tensor, z0: torch.Tensor, labels: torch.Tensor) -> CriteriaTerms:
        """The two terms for a batch: x0 predictions (N, D) with gradients, z0 real latents (N, D), labels (N,)
        dataset classes on the CPU. No host-device synchronisation."""
        order, groups = class_groups(labels)
        pos, neg = x0.new_zeros(()), x0.new_zeros(())
        if self.rep == "off" and self.div == "off":
            return CriteriaTerms(pos, neg)
        order, (x0, z0) = order.to(x0.device), self.centred(x0, z0)
        x0s = x0[order]  # (N, D), grouped by class
        x0n = F.normalize(x0s, dim=1)  # normalised once for every class
        near, far = [], []  # per class: the least similar real row (Eq. 3), the most similar prediction (Eq. 4)
        for c, a, b in groups:
            D_c = self.pred.get(c)
            if D_c is None or len(D_c) == 0:
                continue  # no earlier prediction of this class yet
            if self.rep == "minimax":
                i, row = extreme_pair(x0n[a:b], self.real[c].rows.to(x0.device), largest=False)
                far.append((i + a, row))
            elif self.rep == "mean":
                pos = pos + representativeness(x0s[a:b], z0[order[a:b]].to(x0), "mean")
            if self.div == "minimax":
                i, row = extreme_pair(x0n[a:b], D_c.rows.to(x0.device), largest=True)
                near.append((i + a, row))
            elif self.div == "mean":
                neg = neg + diversity(x0s[a:b], D_c.rows.to(x0), "mean")
        pos = pos + (len(far) - paired_cosines(x0n, far))  # sum_c 1 - min cos
        neg = neg + paired_cosines(x0n, near)  # sum_c max cos
        n = len(groups)
        return CriteriaTerms(pos=pos / n, neg=neg / n)

    def centred(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each (N, D) minus the centre (as it is without one)."""
        if self.centre is None:
            return xs
        return tuple(x - self.centre.to(x) for x in xs)

    def update(self, x0: torch.Tensor, z0: torch.Tensor, labels: torch.Tensor) -> None:
        """Enqueue this step's real latents and predictions, class by class (after the loss); CPU labels."""
        order, groups = class_groups(labels)
        order, (x0, z0) = order.to(x0.device), self.centred(x0.detach(), z0.detach())
        x0s, z0s = x0[order].float(), z0[order].float()  # (N, D) grouped by class
        x0n, z0n = F.normalize(x0s, dim=1), F.normalize(z0s, dim=1)  # once for the batch
        for c, a, b in groups:
            real, pred = self._memory("real", c), self._memory("pred", c)
            real.push((z0n if real.normalize else z0s)[a:b], normalized=real.normalize)
            pred.push((x0n if pred.normalize else x0s)[a:b], normalized=pred.normalize)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors checkpoint: real.<c> and pred.<c>, oldest row first, as held."""
        out = {f"real.{c}": m.items.cpu().contiguous() for c, m in self.real.items()}
        out.update({f"pred.{c}": m.items.cpu().contiguous() for c, m in self.pred.items()})
        out["format"] = torch.tensor(self.FORMAT)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Rows as saved; a checkpoint from before ring buffers (no "format") holds raw rows: normalised here."""
        held_as_is = "format" in state
        self.real, self.pred = {}, {}
        for key, items in state.items():
            if key == "format":
                continue
            kind, c = key.split(".")
            self._memory(kind, int(c)).push(items, normalized=held_as_is)
