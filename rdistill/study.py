"""A distillation study: the whole flow for one target, each method at its best guidance chosen on validation.

    matrix = run_study(StudySettings(base=..., target="fashion-tops", out="runs/fashion"))

1. base: a DiT pretrained on the parent dataset (all of its classes), or the one given.
2. fine-tune: each method of `finetune` (difffit, minimax; the `ablation` ones have their own grid and IPCs
   and matrix parts) on the target's classes, the target train split's carve withheld.
3. guidance: every generated method (`dit` = the base, un-fine-tuned) sampled at max(ipcs) for each scale
   of the grid; at each IPC (a prefix of that set) a student is trained and tested on the carve; each
   (method, IPC) keeps the scale with the best validation accuracy. The test split is not touched.
4. coresets: random / herding / k-center from the target's train split.
5. the matrix on the real test split: every set at each IPC (small protocol, `seeds` students) and the
   full train split as the upper bound (its own epochs), merged into one Matrix for MLflow.
Everything lands under `out` and a rerun reuses it: runs resume, complete sets are skipped, validation.json keeps
the validation table entry by entry, matrix/parts each part of the matrix and matrix/cells each finished cell.
`out` is a folder or a storage URI (s3://...); in storage, the runs train on Ray Train and are published
there, a base only this node's disk holds is published under <out>/base first, and MLflow is a server.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rdistill import storage
from rdistill.common.devices import resolve_device
from rdistill.config import RunConfig, load_config

GENERATED = "dit"  # the method name of the un-fine-tuned base's sets (rdistill.generate.sampling.RUN_METHODS)


@dataclass(frozen=True)
class StudySettings:
    base: RunConfig  # the base's pretraining config (train.method pretrain; its out is where the base lives)
    target: str  # the dataset to distil: a class subset of the base's (fashion-tops) or the same dataset
    out: str  # the study's location: a folder, or a storage URI (then tracking_uri or MLFLOW_TRACKING_URI is needed)
    finetune: dict = field(default_factory=dict)  # method name -> list of key=value overrides
    ablation: tuple[str, ...] = ()  # methods of `finetune` that are Table 5 variants: their own matrix parts
    ablation_ipcs: tuple[int, ...] = (10, 50)  # the IPCs they are validated and evaluated at (Table 5's)
    ablation_guidance: tuple[float, ...] | None = None  # their guidance grid (None: `guidance`)
    ipcs: tuple[int, ...] = (1, 10, 50)
    guidance: tuple[float, ...] = (1.0, 2.0, 4.0)  # the grid each (method, IPC) picks from on validation
    coresets: tuple[str, ...] = ("random", "herding", "kcenter")
    val_fraction: float = 0.2  # the carve of each target class withheld from fine-tuning for validation
    val_epochs: int | None = None  # student epochs on validation (None: the protocol's)
    seeds: int = 3
    student_epochs: int | None = None  # None: the protocol's (small: 300)
    full_epochs: int | None = 20  # the full-data bound's epochs (300 over 24,000 images is hours here); None: skip it
    sample_steps: int = 50
    sample_seed: int = 0
    workers: int = 2  # Ray tasks for the matrix (0: this process)
    judge_epochs: int | None = 3  # the fidelity judge's epochs on the real train split (None: no fidelity)
    experiment: str = "rdistill-study"
    tracking_uri: str | None = None


def finetune_config(s: StudySettings, method: str) -> RunConfig:
    """The fine-tuning run of `method`: Difffit from the base on the target, the carve withheld."""
    keys = [f"data.name={s.target}", f"data.holdout={s.val_fraction}", f"model.preset={s.base.model.preset}",
            f"model.init={s.base.out}", *s.finetune[method], f"out={storage.join(s.out, 'runs', method)}"]
    return load_config(None, keys)


def train_all(s: StudySettings, progress: bool) -> dict[str, str]:
    """The base (pretrained unless it exists) and every fine-tuned run: method -> run location."""
    from rdistill.generate.checkpoint import latest_checkpoint

    runs = {}
    for method, cfg in [(GENERATED, s.base)] + [(m, finetune_config(s, m)) for m in s.finetune]:
        ckpt = latest_checkpoint(cfg.out)  # a folder, or this node's copy of a run published to storage
        if method == GENERATED and ckpt is not None and not (ckpt / "optimizer.pt").exists():
            print(f"[study] base: {cfg.out} (published: its EMA only, used as it is)")  # experiments/bases/
            runs[method] = cfg.out
            continue
        start = time.perf_counter()
        print(f"[study] {'training' if ckpt is None else 'checking'} {method} in {cfg.out}")
        runs[method] = train_run(cfg, progress)
        log_minutes(s, f"train {method}", start)
    return runs


def train_run(cfg: RunConfig, progress: bool) -> str:
    """Train (or complete) one run: in this process into a folder; on Ray Train (one worker, published at the end)
    into storage, where no node's disk holds it."""
    if storage.is_uri(cfg.out):
        from rdistill.distributed.train_ray import fit_ray

        result = fit_ray(cfg, num_workers=1, name="train", progress=progress)
        if result.error is not None:
            raise result.error
        return cfg.out
    from rdistill.generate.finetune import train

    return str(train(cfg, progress=progress))


def stored_base(s: StudySettings) -> StudySettings:
    """For a study in storage, a base that only this node's disk holds (experiments/bases/) is published under
    <out>/base first, so that workers on every node read the same one."""
    from rdistill.generate.checkpoint import latest_checkpoint

    if not storage.is_uri(s.out) or storage.is_uri(s.base.out) or latest_checkpoint(s.base.out) is None:
        return s
    location = storage.join(s.out, "base")
    if not storage.is_complete(location):
        print(f"[study] publishing the base {s.base.out} to {location}")
        storage.upload_dir(s.base.out, location)
    return replace(s, base=replace(s.base, out=location))


def sample_grid(s: StudySettings, runs: dict[str, str], classes: tuple[str, ...]) -> dict[tuple[str, float], str]:
    """(method, guidance) -> a set of max(ipcs) images per target class; smaller IPCs are its prefixes."""
    from rdistill.generate.sampling import SampleJob, run_sampling

    sets = {}
    for method, run in runs.items():
        for g in grid_of(s, method)[0]:
            folder = storage.join(s.out, "sets", method, f"guidance-{g:g}")
            job = SampleJob(run_dir=str(run), out=str(folder), ipc=max(s.ipcs), seed=s.sample_seed,
                            steps=s.sample_steps, guidance=g, classes=classes)
            start = time.perf_counter()
            run_sampling(job, progress=False)
            log_minutes(s, f"sample {method} guidance {g:g}", start)
            sets[method, g] = folder
    return sets


def validate(s: StudySettings, folder: str, ipc: int, seed: int = 0) -> float:
    """Final accuracy (%) of a student trained on the first `ipc` images per class of the set and tested
    on the validation carve of the target's train split."""
    from rdistill.data.validation import validation_split
    from rdistill.evaluate.cells import DataSpec, load_data, train_tensors
    from rdistill.evaluate.protocols import epochs_for, get_protocol
    from rdistill.evaluate.training import train_and_test

    protocol = get_protocol("small", s.val_epochs)
    spec = DataSpec(s.target)
    x, y = train_tensors(spec, str(folder), ipc)
    carve = validation_split(load_data(spec), s.val_fraction).test
    data = load_data(spec)
    epochs = epochs_for(protocol, ipc)
    r = train_and_test(protocol.students[0], protocol, x, y, carve.images(range(len(carve))), carve.labels,
                       num_classes=data.num_classes, seed=seed, device=resolve_device("auto"),
                       epochs=epochs, eval_every=epochs)  # one test, at the end: only the final accuracy counts
    return r["final_acc"]


def choose_guidance(s: StudySettings, sets: dict[tuple[str, float], str], address: str | None = None) -> dict:
    """Validation accuracy of every (method, guidance, IPC) (kept in validation.json, each as it lands; students
    run as `s.workers` Ray tasks) and, for each (method, IPC), the guidance with the best one."""
    from rdistill.distributed.tasks import run_calls

    path = storage.join(s.out, "validation.json")
    table = storage.read_json(path)
    todo = [(f"{m}|{g:g}|{ipc}", folder, ipc) for (m, g), folder in sets.items() for ipc in grid_of(s, m)[1]
            if f"{m}|{g:g}|{ipc}" not in table]

    def record(i: int, acc: float) -> None:
        table[todo[i][0]] = acc
        storage.write_json(path, table)

    start = time.perf_counter()
    run_calls(validate, [((s, folder, ipc), {}) for _, folder, ipc in todo], workers=s.workers, address=address,
              on_result=record)
    log_minutes(s, "validate guidance", start)
    best = {}
    for (method, g), folder in sets.items():
        for ipc in grid_of(s, method)[1]:
            acc = table[f"{method}|{g:g}|{ipc}"]
            if (method, ipc) not in best or acc > best[method, ipc][1]:
                best[method, ipc] = (g, acc, folder)
    return best


def grid_of(s: StudySettings, method: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(guidance scales, IPCs) a generated method is sampled, validated and evaluated at: an ablation's own."""
    return (s.ablation_guidance or s.guidance, s.ablation_ipcs) if method in s.ablation else (s.guidance, s.ipcs)


def select_all(s: StudySettings) -> list[str]:
    from rdistill.data import load_dataset
    from rdistill.generate.select import select_coreset

    dataset, folders = load_dataset(s.target), []
    for method in s.coresets:
        folders.append(storage.join(s.out, "sets", method))
        select_coreset(dataset, method, max(s.ipcs), 0, folders[-1])
    return folders


def evaluate_all(s: StudySettings, best: dict, coresets: list[str], address: str | None):
    """The matrix: at each IPC the methods' chosen sets and the coresets, the ablations apart, then the full-data
    bound; each part is kept in <out>/matrix/parts, and a rerun evaluates only the parts not done yet."""
    from rdistill.evaluate.cells import MatrixSpec
    from rdistill.evaluate.matrix import Matrix, aggregate

    def part(ipc: int, ablation: bool, extra: list[str]) -> MatrixSpec:
        chosen = [str(folder) for (method, k), (_, _, folder) in best.items()
                  if k == ipc and (method in s.ablation) == ablation]
        return MatrixSpec(tuple(chosen + extra), s.target, seeds=s.seeds, ipcs=(ipc,), epochs=s.student_epochs)

    specs = {f"evaluate ipc {ipc}": part(ipc, False, [str(c) for c in coresets]) for ipc in s.ipcs}
    specs |= {f"evaluate ipc {ipc} ablation": part(ipc, True, []) for ipc in s.ablation_ipcs if s.ablation}
    if s.full_epochs is not None:
        specs["evaluate full"] = MatrixSpec((), s.target, seeds=s.seeds, full=True, epochs=s.full_epochs)
    parts = [evaluate_part(s, name, spec, address) for name, spec in specs.items()]
    results = [r for m in parts for r in m.results]
    mmd = {k: v for m in parts if m.features for k, v in m.features.mmd.items()}
    sets = {k: v for m in parts if m.features for k, v in m.features.sets.items()}
    features = replace(parts[0].features, sets=sets, mmd=mmd)
    spec = replace(parts[0].spec, ipcs=tuple(s.ipcs), full=s.full_epochs is not None,
                   surrogates=tuple(dict.fromkeys(x for m in parts for x in m.spec.surrogates)))
    return Matrix(tuple(aggregate(results, mmd)), tuple(results), spec, features, sum(m.seconds for m in parts))


def evaluate_part(s: StudySettings, name: str, spec, address: str | None):
    """One part of the matrix, evaluated once: kept as <out>/matrix/parts/<name>.pkl with its spec, and reused
    while the spec is the same; each finished cell is kept in <out>/matrix/cells, so a stopped part loses none."""
    import pickle

    from rdistill.evaluate.matrix import evaluate_matrix

    path = storage.join(s.out, "matrix", "parts", f"{name.replace(' ', '-')}.pkl")
    if storage.exists(path):
        kept = pickle.loads(storage.read_bytes(path))
        if kept.spec == spec:
            print(f"[study] {name}: kept in {path}")
            return kept
    start = time.perf_counter()
    matrix = evaluate_matrix(spec, workers=s.workers, address=address, keep=storage.join(s.out, "matrix", "cells"))
    storage.write_bytes(path, pickle.dumps(matrix))
    log_minutes(s, name, start)
    return matrix


def log_minutes(s: StudySettings, what: str, start: float) -> None:
    """One line per stage, and minutes.json for the write-up."""
    minutes = (time.perf_counter() - start) / 60
    path = storage.join(s.out, "minutes.json")
    table = storage.read_json(path)
    table[what] = table.get(what, 0.0) + minutes
    storage.write_json(path, table)
    print(f"[study] {what}: {minutes:.1f} min")


def run_study(s: StudySettings, *, address: str | None = None, progress: bool = True):
    """All five steps; returns the merged Matrix (also in <out>/matrix.md and MLflow)."""
    from rdistill.data import load_dataset
    from rdistill.tracking import log_matrix, mlflow_uri, ui_command

    # Checks, before any work:
    if s.base.train.method != "pretrain":
        raise ValueError(f"the study's base is pretrained by it: base train.method must be pretrain, not {s.base.train.method!r}")
    if missing := [m for m in (GENERATED, *s.finetune) if m in s.coresets]:
        raise ValueError(f"method names {missing} are both generated and coreset methods")
    if unknown := [m for m in s.ablation if m not in s.finetune]:
        raise ValueError(f"ablation methods {unknown} are not fine-tuning methods ({', '.join(s.finetune)})")
    if s.ablation and (outside := sorted(set(s.ablation_ipcs) - set(s.ipcs))):
        raise ValueError(f"ablation IPCs {outside} are not among the study's IPCs {list(s.ipcs)}")
    classes = load_dataset(s.target).classes  # an unknown target or class raises here
    uri = mlflow_uri(s.out, s.tracking_uri)  # a study in storage without an MLflow server raises here
    if storage.is_uri(s.out):
        storage.check_writable(s.out)

    # Generate, choose on validation, select, evaluate:
    s = stored_base(s)
    runs = train_all(s, progress)
    sets = sample_grid(s, runs, classes)
    best = choose_guidance(s, sets, address)
    for (method, ipc), (g, acc, _) in sorted(best.items()):
        print(f"[study] {method} ipc {ipc}: guidance {g:g} (validation {acc:.1f} %)")
    coresets = select_all(s)
    matrix = evaluate_all(s, best, coresets, address)
    print(matrix.as_table())
    if s.judge_epochs is not None:  # how often a real-trained network recognises each set's labels
        from rdistill.evaluate.cells import DataSpec
        from rdistill.evaluate.fidelity import fidelity_table

        named = {f"{m} guidance {g:g}": f for (m, g), f in sets.items()} | dict(zip(s.coresets, coresets))
        table = fidelity_table(storage.join(s.out, "fidelity.json"), named, DataSpec(s.target), max(s.ipcs),
                               s.judge_epochs)
        print("[study] fidelity (% of a set's images a real-trained judge assigns to their class): " +
              ", ".join(f"{k} {v['all']:.1f}" for k, v in table["sets"].items()))

    # MLflow (the validation table and the minutes as artifacts):
    config = {"study": {k: v for k, v in s.__dict__.items() if k != "base"}, "base": s.base.out,
              "guidance_chosen": {f"{m}/ipc{k}": g for (m, k), (g, _, _) in best.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        names = ("validation.json", "minutes.json") + (("fidelity.json",) if s.judge_epochs is not None else ())
        tables = [Path(tmp) / name for name in names]
        for t in tables:
            t.write_bytes(storage.read_bytes(storage.join(s.out, t.name)))
        run_id = log_matrix(matrix, config=json.loads(json.dumps(config, default=str)), experiment=s.experiment,
                            tracking_uri=uri, out_dir=storage.join(s.out, "matrix"), name=f"study {s.target}",
                            artifacts=tables)
    print(f"MLflow run {run_id}\n{ui_command(uri)}")
    return matrix
