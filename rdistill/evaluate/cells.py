"""One cell of the evaluation matrix: a student trained on a surrogate set (or the full train split) with one
seed and tested on the real test split (SPEC.md section 5); planning the cells and checking the inputs
before any work.

    cells = plan_cells(load_manifests(folders), ipcs=(1, 10), students=("convnet-3",), seeds=3, include_full=True)
    result = run_cell(cells[0], DataSpec("digits"), "small", epochs=None)   # a plain function; Ray runs it as a task
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rdistill.common.devices import resolve_device
from rdistill.evaluate.protocols import get_protocol

FULL = "full"  # method and surrogate name of the whole-real-train-split reference
TEACHER = "resnet-18"  # the soft-label teacher's architecture (RDED, SPEC.md section 5)


@dataclass(frozen=True)
class DataSpec:
    name: str
    root: str | None = None
    image_size: int | None = None  # the protocol's resolution; None = the dataset's own


@dataclass(frozen=True)
class Cell:
    method: str
    ipc: int | None  # None: every training image (the `full` reference)
    student: str
    seed: int
    surrogate: str  # the set's folder, or FULL
    guidance: float | None = None  # the set's classifier-free guidance scale (None: not generated)


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    final_acc: float  # % after the last epoch
    best_acc: float  # % max over the tests during training
    history: tuple[tuple[int, float], ...]  # (epoch, test acc %)
    epochs: int
    seconds: float
    state: dict | None = field(default=None, repr=False)  # the trained student, kept for the feature network


@dataclass(frozen=True)
class MatrixSpec:
    surrogates: tuple[str, ...]  # surrogate-set folders (their manifests say method and IPC)
    dataset: str
    root: str | None = None
    students: tuple[str, ...] = ("convnet-3",)
    seeds: int = 3  # seeds 0..seeds-1
    ipcs: tuple[int, ...] | None = None  # prefixes to evaluate; None = each set's own IPC
    protocol: str = "small"
    epochs: int | None = None  # overrides the protocol's epoch rule (recorded)
    full: bool = False  # also train on the whole real train split (the upper bound)
    teacher: str | None = None  # soft-label protocols: a state_dict of TEACHER trained on the dataset
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    image_size: int | None = None  # students train and test at this size; None: the protocol's, else the data's
    max_memory: float | None = None  # GB one cell may take (a student in training); None: unchecked


# Planning and checks (before any work):


def plan_cells(surrogates: dict, ipcs, students, seeds: int, include_full: bool) -> list[Cell]:
    """Every cell: surrogates maps folder -> Manifest; ipcs None takes each set's own IPC. Several sets of one
    method at one IPC must be draws of one set (rdistill.evaluate.draws): each gets every student and seed."""
    from rdistill.evaluate.draws import group_draws

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not students:
        raise ValueError("name at least one student")
    if not surrogates and not include_full:
        raise ValueError("nothing to evaluate: give surrogate sets or the full reference")
    groups: dict[tuple, dict] = {}
    for folder, m in surrogates.items():
        for ipc in ipcs or [m.ipc]:
            if not 1 <= ipc <= m.ipc:
                raise ValueError(f"--ipc {ipc} is outside 1..{m.ipc}, the IPC of the set in {folder}")
            groups.setdefault((m.method, ipc), {})[str(folder)] = m
    sets = [(method, ipc, folder, (draws[folder].config or {}).get("sampling", {}).get("guidance"))
            for (method, ipc), draws in groups.items() for folder in group_draws(draws, ipc)]
    sets += [(FULL, None, FULL, None)] if include_full else []
    return [Cell(meth, ipc, s, seed, folder, g) for meth, ipc, folder, g in sets for s in students for seed in range(seeds)]


def load_manifests(folders) -> dict:
    from rdistill.data.shards import Manifest

    return {str(f): Manifest.load(f) for f in folders}  # FileNotFoundError without _manifest.json


def check_inputs(spec: MatrixSpec, dataset, manifests: dict, protocol) -> None:
    """Classes, image channels, completeness, students and teacher; ValueError naming what is wrong."""
    from rdistill.models.students import build_student
    from rdistill.data.shards import read_surrogate

    size = dataset.image_size
    for folder, m in manifests.items():
        absent = [c for c in dataset.classes if c not in m.classes]
        if absent:  # a set may hold more classes (sampled from a base that knows them): matched by name
            raise ValueError(f"{folder} has classes {list(m.classes)}, dataset {dataset.name} has "
                             f"{list(dataset.classes)}: {absent} missing")
        need = min(max(spec.ipcs or [m.ipc]), m.ipc)
        short = {c: m.counts.get(c, 0) for c in dataset.classes if m.counts.get(c, 0) < need}
        if short:
            raise ValueError(f"{folder} is incomplete: these classes have fewer than {need} images: {short}")
        c, h, _ = read_surrogate(folder, 1, classes=dataset.classes[:1])[0][0].shape
        if c != dataset.channels:
            raise ValueError(f"{folder} holds {c}-channel images, dataset {dataset.name} has {dataset.channels}")
        if h != size and spec.image_size is None and protocol.image_size is None:  # resizing is asked for, never implied
            raise ValueError(f"{folder} holds {h}x{h} images but dataset {dataset.name} is read at {size}x{size}: "
                             f"pass --image-size {h} to evaluate at the set's size (or --image-size {size} to "
                             "resize the set)")
    for name in spec.students:  # unknown names and depths too deep for the resolution raise here
        net = build_student(name, dataset.num_classes, dataset.channels, size)
        if spec.max_memory is not None:
            check_memory(name, net, dataset, protocol.batch_size, spec.max_memory)
    if (protocol.soft_labels is not None) != (spec.teacher is not None):
        raise ValueError(f"protocol {protocol.name!r} {'needs' if protocol.soft_labels else 'takes no'} teacher "
                         f"(got {spec.teacher!r}): soft-label protocols need a {TEACHER} state_dict file")


def check_memory(name: str, net: torch.nn.Module, dataset, batch_size: int, max_gb: float) -> None:
    """Refuse a student whose training needs more than `max_gb` (estimate_memory), naming what to change."""
    need = estimate_memory(net, dataset, batch_size) / 2**30
    if need > max_gb:
        s = dataset.image_size
        raise ValueError(f"student {name} at {s}x{s} px, batch {batch_size}, needs ~{need:.1f} GB per cell, more "
                         f"than the {max_gb:.1f} GB a cell may take (--max-memory): pass a smaller --image-size "
                         "(the surrogate sets' own), fewer --workers, or a larger --max-memory")


TORCH_WORKING_MEMORY = 256 * 2**20  # kernels' buffers, allocator slack: a 32 px cell grows RSS ~0.45 GB (benchmark)


def estimate_memory(net: torch.nn.Module, dataset, batch_size: int) -> int:
    """Bytes a cell needs at its peak: the real splits as float tensors and the weights (with gradient and
    momentum), plus the larger of training (every module output of a batch kept for the backward pass) and
    testing (two consecutive module outputs of a test batch). Module outputs are measured on one image with
    forward hooks. benchmarks/evaluate_memory.py compares the estimate with peak RSS growth (1.2-1.5x above)."""
    from rdistill.evaluate.training import TEST_BATCH

    outputs = []

    def hook(_module, _inputs, out):
        if isinstance(out, torch.Tensor):
            outputs.append(out.numel() * out.element_size())

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, dataset.channels, dataset.image_size, dataset.image_size))
    finally:
        for h in handles:
            h.remove()
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    pixels = (len(dataset.train) + len(dataset.test)) * dataset.channels * dataset.image_size**2 * 4  # float32
    train = sum(outputs) * batch_size
    test = max(a + b for a, b in zip(outputs, outputs[1:] + [0])) * min(TEST_BATCH, len(dataset.test))
    return max(train, test) + 3 * weights + pixels + TORCH_WORKING_MEMORY


# One cell (a plain function; Ray runs it as a task):


@functools.lru_cache(maxsize=2)
def load_data(data: DataSpec):
    from rdistill.data import load_dataset

    return load_dataset(data.name, image_size=data.image_size, root=data.root)


@functools.lru_cache(maxsize=2)
def real_test_tensors(data: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    test = load_data(data).test
    return test.images(range(len(test))), test.labels  # (N, C, S, S), (N,)


def train_tensors(data: DataSpec, surrogate: str, ipc: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `ipc` images per class of a surrogate set at the dataset's size, or the full train split."""
    from rdistill.data.shards import read_surrogate

    d = load_data(data)
    if surrogate == FULL:
        return d.train.images(range(len(d.train))), d.train.labels
    s = read_surrogate(surrogate, ipc, classes=list(d.classes))  # a set may hold more classes: the dataset's
    x, y = s.tensors()  # (K * ipc, C, H, W), labels as the set numbers its classes
    y = torch.tensor([d.classes.index(s.classes[k]) for k in y.tolist()], dtype=torch.long)  # as the dataset does
    if x.shape[-2:] != (d.image_size, d.image_size):  # e.g. generated at 256, trained at 224 (IDC)
        x = F.interpolate(x, size=(d.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
    return x, y


def load_teacher(path: str, data: DataSpec) -> torch.nn.Module:
    from rdistill.models.students import build_student

    d = load_data(data)
    net = build_student(TEACHER, d.num_classes, d.channels, d.image_size)
    import io

    from rdistill import storage

    state = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=True)  # path or URI
    check_teacher(state, d.num_classes, path)
    net.load_state_dict(state)
    return net


def check_teacher(state: dict, num_classes: int, path: str) -> None:
    """A torchvision / timm ResNet-18 state_dict (both name the classifier fc) for `num_classes` classes."""
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None:
        raise ValueError(f"teacher {path} is not a ResNet-18 state_dict (no fc.weight): give a torchvision or timm "
                         "resnet18 state_dict, or train one with `rdistill teacher`")
    if fc.shape[0] != num_classes:
        raise ValueError(f"teacher {path} has {fc.shape[0]} classes, the dataset has {num_classes}: give a teacher "
                         "trained on this dataset's classes (`rdistill teacher`)")


def run_cell(cell: Cell, data: DataSpec, protocol_name: str, epochs: int | None, *, teacher: str | None = None,
             device: str = "auto", keep_model: bool = False) -> CellResult:
    """Train cell.student on the cell's set (seed cell.seed) and test it on the real test split."""
    from rdistill.evaluate.training import train_and_test

    protocol = get_protocol(protocol_name, epochs)
    if load_data(data).test.paths is not None:  # a folder dataset (ImageNet): stream, never whole splits
        return run_cell_streamed(cell, data, protocol, teacher=teacher, device=device, keep_model=keep_model)
    x, y = train_tensors(data, cell.surrogate, cell.ipc)
    tx, ty = real_test_tensors(data)
    d = load_data(data)
    r = train_and_test(cell.student, protocol, x, y, tx, ty, num_classes=d.num_classes, seed=cell.seed,
                       device=resolve_device(device), teacher=load_teacher(teacher, data) if teacher else None)
    state = {k: v.cpu() for k, v in r["model"].state_dict().items()} if keep_model else None
    return CellResult(cell, r["final_acc"], r["best_acc"], tuple(r["history"]), r["epochs"], r["seconds"], state)


def run_cell_streamed(cell: Cell, data: DataSpec, protocol, *, teacher: str | None, device: str,
                      keep_model: bool, workers: int = 2) -> CellResult:
    """run_cell for a file dataset: the surrogate set (packed on node-local scratch) and the real split
    read in batches by DataLoader workers (rdistill.evaluate.streams)."""
    from rdistill.evaluate.streams import FileImages, pack_surrogate, train_and_test_streamed

    d = load_data(data)
    train = FileImages(d.train) if cell.surrogate == FULL else \
        pack_surrogate(cell.surrogate, cell.ipc, d.classes, d.image_size)
    r = train_and_test_streamed(cell.student, protocol, train, FileImages(d.test), num_classes=d.num_classes,
                                seed=cell.seed, device=resolve_device(device), workers=workers,
                                teacher=load_teacher(teacher, data) if teacher else None)
    state = {k: v.cpu() for k, v in r["model"].state_dict().items()} if keep_model else None
    return CellResult(cell, r["final_acc"], r["best_acc"], tuple(r["history"]), r["epochs"], r["seconds"], state)
