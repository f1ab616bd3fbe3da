"""The evaluation matrix: each (method, IPC, student, seed) cell trains a student on a surrogate set and
tests it on the real test split (SPEC.md section 5); a row is a (method, IPC, student) over the seeds.

    spec = MatrixSpec(surrogates=("sets/random", "sets/herding"), dataset="digits", ipcs=(1, 10, 50), full=True)
    matrix = evaluate_matrix(spec, workers=2)  # one Ray task per cell; workers=0 runs them in this process
    print(matrix.as_table())

Two accuracies (top-1 %), labelled everywhere: `final`, after the last epoch, and `best`, the maximum over
the tests during training (what the reference implementations report). Mean and std over seeds 0..N-1;
std is the population std (numpy's default, as the dataset-condensation code reports it).
Relative metrics: `vs random` = row mean - mean of the `random` set at the same IPC and student;
`gap to full` = mean of `full` (the whole real train split, hard labels) - row mean.
MMD (Table 2, rdistill.metrics) between the features of each (method, IPC) set and of the real train split
under one fixed network: the first student trained on the full split (seed 0) when `full` is evaluated,
otherwise a randomly initialised ConvNet (torch seed 0), the embedding herding and k-center select with,
which flatters them; `Matrix.feature_network` says which.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rdistill.matrix import FULL, Matrix, aggregate
from rdistill.protocols import get_protocol

FEATURE_SEED = 0  # torch seed of the random-init ConvNet feature network (as rdistill.select)
FEATURE_BATCH = 512  # images per forward when extracting features
TEACHER = "resnet-18"  # the soft-label teacher's architecture (RDED, SPEC.md section 5)
MAX_RETRIES = 3  # Ray re-runs a cell whose worker process died


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


# Planning and checks (before any work):


def plan_cells(surrogates: dict, ipcs, students, seeds: int, include_full: bool) -> list[Cell]:
    """Every cell: surrogates maps folder -> Manifest; ipcs None takes each set's own IPC."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not students:
        raise ValueError("name at least one student")
    if not surrogates and not include_full:
        raise ValueError("nothing to evaluate: give surrogate sets or the full reference")
    sets, seen = [], {}
    for folder, m in surrogates.items():
        for ipc in ipcs or [m.ipc]:
            if not 1 <= ipc <= m.ipc:
                raise ValueError(f"--ipc {ipc} is outside 1..{m.ipc}, the IPC of the set in {folder}")
            if (m.method, ipc) in seen:
                raise ValueError(f"{seen[m.method, ipc]} and {folder} are both method {m.method!r} at IPC {ipc}")
            seen[m.method, ipc] = folder
            sets.append((m.method, ipc, str(folder)))
    sets += [(FULL, None, FULL)] if include_full else []
    return [Cell(meth, ipc, s, seed, folder) for meth, ipc, folder in sets for s in students for seed in range(seeds)]


def load_manifests(folders) -> dict:
    from rdistill.shards import Manifest

    return {str(f): Manifest.load(f) for f in folders}  # FileNotFoundError without _manifest.json


def check_inputs(spec: MatrixSpec, dataset, manifests: dict, protocol) -> None:
    """Classes, image channels, completeness, students and teacher; ValueError naming what is wrong."""
    from rdistill.models.students import build_student
    from rdistill.shards import read_surrogate

    for folder, m in manifests.items():
        if list(m.classes) != list(dataset.classes):
            raise ValueError(f"{folder} has classes {list(m.classes)}, dataset {dataset.name} has {list(dataset.classes)}")
        need = min(max(spec.ipcs or [m.ipc]), m.ipc)
        short = {c: m.counts.get(c, 0) for c in m.classes if m.counts.get(c, 0) < need}
        if short:
            raise ValueError(f"{folder} is incomplete: these classes have fewer than {need} images: {short}")
        c = read_surrogate(folder, 1)[0][0].shape[0]
        if c != dataset.channels:
            raise ValueError(f"{folder} holds {c}-channel images, dataset {dataset.name} has {dataset.channels}")
    for name in spec.students:  # unknown names and depths too deep for the resolution raise here
        build_student(name, dataset.num_classes, dataset.channels, dataset.image_size)
    if (protocol.soft_labels is not None) != (spec.teacher is not None):
        raise ValueError(f"protocol {protocol.name!r} {'needs' if protocol.soft_labels else 'takes no'} teacher "
                         f"(got {spec.teacher!r}): soft-label protocols need a {TEACHER} state_dict file")


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
    from rdistill.shards import read_surrogate

    d = load_data(data)
    if surrogate == FULL:
        return d.train.images(range(len(d.train))), d.train.labels
    x, y = read_surrogate(surrogate, ipc).tensors()  # (K * ipc, C, H, W)
    if x.shape[-2:] != (d.image_size, d.image_size):  # e.g. generated at 256, trained at 224 (IDC)
        x = F.interpolate(x, size=(d.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
    return x, y


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_teacher(path: str, data: DataSpec) -> torch.nn.Module:
    from rdistill.models.students import build_student

    d = load_data(data)
    net = build_student(TEACHER, d.num_classes, d.channels, d.image_size)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


def run_cell(cell: Cell, data: DataSpec, protocol_name: str, epochs: int | None, *, teacher: str | None = None,
             device: str = "auto", threads: float | None = None, keep_model: bool = False) -> CellResult:
    """Train cell.student on the cell's set (seed cell.seed) and test it on the real test split."""
    from rdistill.student_training import train_and_test

    if threads is not None:
        from rdistill.cluster import limit_threads

        limit_threads(threads)
    protocol = get_protocol(protocol_name, epochs)
    x, y = train_tensors(data, cell.surrogate, cell.ipc)
    tx, ty = real_test_tensors(data)
    d = load_data(data)
    built = []
    with _capture_student(built):
        r = train_and_test(cell.student, protocol, x, y, tx, ty, num_classes=d.num_classes, seed=cell.seed,
                           device=resolve_device(device), teacher=load_teacher(teacher, data) if teacher else None)
    state = {k: v.cpu() for k, v in built[-1].state_dict().items()} if keep_model else None
    return CellResult(cell, r["final_acc"], r["best_acc"], tuple(r["history"]), r["epochs"], r["seconds"], state)


@contextlib.contextmanager
def _capture_student(built: list):
    """Record the student train_and_test builds (it returns metrics only; the feature network needs the model)."""
    from rdistill import student_training

    original = student_training.build_student

    def build(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    student_training.build_student = build
    try:
        yield
    finally:
        student_training.build_student = original


# Many cells, in this process or as Ray tasks:


def _remote_call(fn, threads: float, *args, **kwargs):
    return fn(*args, threads=threads, **kwargs)


def run_tasks(fn, calls: list[tuple[tuple, dict]], workers: int, progress: bool, desc: str,
              address: str | None = None) -> list:
    """fn(*args, **kwargs) for each call, in order: here (workers=0) or as Ray tasks, `workers` in flight
    (on the Ray at `address`, default a local one)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = no Ray), got {workers}")
    results = [None] * len(calls)
    with tqdm(total=len(calls), desc=desc, unit="cell", disable=not progress) as bar:
        if workers == 0:
            for i, (args, kwargs) in enumerate(calls):
                results[i] = fn(*args, **kwargs)
                bar.update(1)
            return results
        from rdistill.cluster import connect, task_options

        ray = connect(address)
        opts = task_options()
        remote = ray.remote(max_retries=MAX_RETRIES)(_remote_call).options(**opts)
        queue, running = list(reversed(range(len(calls)))), {}  # pop() takes calls in order
        try:
            while queue or running:
                while queue and len(running) < workers:
                    i = queue.pop()
                    args, kwargs = calls[i]
                    running[remote.remote(fn, opts["num_cpus"], *args, **kwargs)] = i
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    results[running.pop(ref)] = ray.get(ref)
                    bar.update(1)
        finally:
            for ref in running:  # an error (or Ctrl-C) leaves nothing running
                ray.cancel(ref, force=True)
    return results


# Features: MMD to the real train split (Table 2) and the t-SNE inputs (Fig. 3):


@dataclass(frozen=True)
class Features:
    network: str  # which fixed network produced them
    real: torch.Tensor  # (N, D) the real train split
    real_labels: torch.Tensor  # (N,)
    sets: dict  # (method, ipc) -> (features (n, D), labels (n,))
    mmd: dict  # (method, ipc) -> {"linear": float, "rbf": float}


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
                     device: str = "auto", threads: float | None = None) -> Features:
    """Features of the real train split and of each (method, ipc, folder) set, and the MMD between them."""
    from rdistill.metrics import features, mmd

    if threads is not None:
        from rdistill.cluster import limit_threads

        limit_threads(threads)
    name, net = feature_network(data, student, state)
    net = net.to(resolve_device(device))
    train = load_data(data).train
    real = torch.cat([features(net, train.images(i)) for i in torch.arange(len(train)).split(FEATURE_BATCH)])
    out, dist = {}, {}
    for method, ipc, folder in sets:
        x, y = train_tensors(data, folder, ipc)
        out[method, ipc] = (features(net, x, FEATURE_BATCH), y)
        dist[method, ipc] = {k: mmd(out[method, ipc][0], real, kernel=k) for k in ("linear", "rbf")}
    return Features(name, real, train.labels, out, dist)


def evaluate_matrix(spec: MatrixSpec, workers: int = 0, progress: bool = True, address: str | None = None) -> Matrix:
    """Check the inputs, run every cell (Ray tasks when workers > 0), then the features and MMD."""
    # Checks, before any work:
    protocol = get_protocol(spec.protocol, spec.epochs)
    data = DataSpec(spec.dataset, spec.root, protocol.image_size)
    manifests = load_manifests(spec.surrogates)
    check_inputs(spec, load_data(data), manifests, protocol)
    cells = plan_cells(manifests, spec.ipcs, spec.students, spec.seeds, spec.full)

    # The cells; the full reference of the first student (seed 0) becomes the feature network:
    start = time.perf_counter()
    keep = Cell(FULL, None, spec.students[0], 0, FULL) if spec.full else None
    kw = dict(teacher=spec.teacher, device=spec.device)
    calls = [((c, data, spec.protocol, spec.epochs), dict(kw, keep_model=c == keep)) for c in cells]
    results = run_tasks(run_cell, calls, workers, progress, "evaluate", address)
    state = next((r.state for r in results if r.cell == keep), None)

    # Features and MMD, one task:
    sets = list(dict.fromkeys((c.method, c.ipc, c.surrogate) for c in cells if c.method != FULL))
    call = ((data, sets, spec.students[0], state), {"device": spec.device})
    feats = run_tasks(compute_features, [call], min(workers, 1), False, "features", address)[0]
    results = [replace(r, state=None) for r in results]
    return Matrix(tuple(aggregate(results, feats.mmd)), tuple(results), spec, feats, time.perf_counter() - start)
