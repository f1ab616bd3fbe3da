"""The Fig. 6 sweep: Ray Tune + Optuna over epochs, lambda_r, lambda_d and N_M, tracked in MLflow.

    outcome = run_sweep(SweepSettings(out="runs/sweep", base=cfg, trials=8))   # resume=True completes one

A trial (`trial`) fine-tunes the base model with its values on Ray Train (rdistill.train_ray, a
TorchTrainer nested in the Tune function trainable, its losses forwarded to Tune as they come), samples
a surrogate set, trains a student on it and tests the student on a validation carve of the TRAIN split
(rdistill.data.validation): the test split is only touched by the final report, which tests the best
configuration and the paper's next to each other. With ASHA the trial is evaluated at epoch rungs and
unpromising trials stop early. Runs carry no timestamps, so Tuner.restore completes an interrupted sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from rdistill.config import RunConfig, merge, validate

AXES = ("epochs", "lambda_r", "lambda_d", "memory_size")
PAPER_POINT = {"epochs": 8, "lambda_r": 0.002, "lambda_d": 0.008, "memory_size": 64}  # Sec. 4.1, 4.6; Fig. 6 dashes
METRIC = "val_acc"  # the student's final accuracy (%) on the validation carve
LOSSES = ("loss_total", "loss_mse", "loss_vb", "loss_pos", "loss_neg")


@dataclass(frozen=True)
class Space:
    """The search ranges (low, high), both included; the defaults are the ranges of Fig. 6."""

    epochs: tuple[int, int] = (1, 12)  # Fig. 6a plots 0-12 (0 is the base itself); uniform integers
    lambda_r: tuple[float, float] = (0.001, 0.01)  # Fig. 6b (log-uniform)
    lambda_d: tuple[float, float] = (0.002, 0.03)  # Fig. 6c (log-uniform)
    memory_size: tuple[int, int] = (16, 1024)  # Fig. 6d: the powers of 2 in the range

    def check(self) -> None:
        for axis in AXES:
            low, high = getattr(self, axis)
            if low > high:
                raise ValueError(f"search range of {axis}: low {low} > high {high}")
            if low <= 0 or (axis == "epochs" and low < 1):
                least = ">= 1" if axis == "epochs" else "> 0"
                raise ValueError(f"search range of {axis}: low must be {least}, got {low}")
        if not self.memory_sizes():
            raise ValueError(f"search range of memory_size {self.memory_size} holds no power of 2")

    def memory_sizes(self) -> list[int]:
        low, high = self.memory_size
        return [2**k for k in range(0, 31) if low <= 2**k <= high]

    def param_space(self) -> dict:
        """Tune's search space; an axis with low == high is a constant."""
        def axis(name, domain):
            low, high = getattr(self, name)
            return low if low == high else domain(low, high)

        sizes = self.memory_sizes()
        return {"epochs": axis("epochs", lambda a, b: tune.randint(a, b + 1)),
                "lambda_r": axis("lambda_r", tune.loguniform), "lambda_d": axis("lambda_d", tune.loguniform),
                "memory_size": sizes[0] if len(sizes) == 1 else tune.choice(sizes)}

    def contains(self, point: dict) -> bool:
        inside = all(getattr(self, a)[0] <= point[a] <= getattr(self, a)[1] for a in AXES)
        return inside and point["memory_size"] in self.memory_sizes()


@dataclass(frozen=True)
class SweepSettings:
    out: str  # the sweep folder: trials/, mlflow.db, the plots, Tune's state in <out>/<name>
    base: RunConfig  # what every trial fine-tunes with (model.init = the base model); the axes override it
    space: Space = field(default_factory=Space)
    trials: int = 8  # the budget: trials in all, the paper's point first
    ipc: int = 10  # images per class of each trial's surrogate set
    sample_steps: int = 50  # sampling steps (SPEC.md section 3)
    protocol: str = "small"  # the student's training protocol (rdistill.protocols)
    student: str | None = None  # None: the protocol's first student
    student_epochs: int | None = None  # None: the protocol's
    val_fraction: float = 0.2  # the share of each class of the train split held out for validation
    test_seeds: int = 1  # students per configuration in the final test report
    seed: int = 0  # Optuna's sampler, the validation carve, sampling noise, the students
    num_workers: int = 1  # Ray Train workers per trial (DDP when > 1)
    use_gpu: bool | None = None  # None: GPUs where the cluster has them
    max_concurrent: int | None = None  # None: as many trials as the cluster's CPUs (or GPUs) hold
    asha: bool = False  # evaluate at epoch rungs and stop unpromising trials early
    name: str = "sweep"  # Tune's run name (no timestamp, so that it can be restored)
    experiment: str = "rdistill-sweep"  # the MLflow experiment
    tracking: str | None = None  # an MLflow tracking server; None: SQLite in the sweep folder

    def check(self) -> None:
        self.space.check()
        checks = [("trials", self.trials >= 1, ">= 1 (the trial budget)"), ("ipc", self.ipc >= 1, ">= 1"),
                  ("sample_steps", self.sample_steps >= 1, ">= 1"), ("test_seeds", self.test_seeds >= 1, ">= 1"),
                  ("val_fraction", 0 < self.val_fraction < 1, "in (0, 1)"),
                  ("num_workers", self.num_workers >= 1, ">= 1"),
                  ("max_concurrent", self.max_concurrent is None or self.max_concurrent >= 1, ">= 1 or None")]
        for key, ok, expected in checks:
            if not ok:
                raise ValueError(f"sweep setting {key} = {getattr(self, key)!r} is invalid: expected {expected}")
        if self.base.train.method != "minimax":
            raise ValueError(f"the sweep tunes the minimax criteria; base train.method is {self.base.train.method!r}")
        if not self.base.model.init:
            raise ValueError("the sweep fine-tunes a base model: set model.init (--base) in its base config")
        if self.base.train.batch_size < self.num_workers:
            raise ValueError(f"train.batch_size {self.base.train.batch_size} < {self.num_workers} workers per trial")
        from rdistill.protocols import get_protocol

        get_protocol(self.protocol)  # an unknown protocol raises ValueError naming the known ones

    @property
    def tracking_uri(self) -> str:
        from rdistill.tracking import mlflow_uri

        return mlflow_uri(self.out, self.tracking)


# --- One trial -----------------------------------------------------------------------------------


class LossReport(TuneReportCallback):
    """Forwards the fine-tuning reports to Tune, with val_acc NaN (not measured yet): Tune wants the metric
    in every result; ASHA skips results without its time attribute, the epoch of a validation."""

    def after_report(self, run_context, metrics, checkpoint):
        super().after_report(run_context, [{**m, METRIC: math.nan} for m in metrics], checkpoint)


def trial_config(settings: SweepSettings, config: dict, run_dir: Path) -> RunConfig:
    """The fine-tuning config of a trial: the base with the trial's values, its run folder under the trial."""
    values = {"epochs": int(config["epochs"]), "lambda_r": float(config["lambda_r"]),
              "lambda_d": float(config["lambda_d"]), "memory_size": int(config["memory_size"])}
    data = {"holdout": settings.val_fraction}  # the generator never sees the validation images
    return validate(merge(settings.base, {"train": values, "data": data, "out": str(run_dir)}))


def stages(cfg: RunConfig, steps_per_epoch: int, asha: bool, rungs: list[int]) -> list[tuple[int, int]]:
    """(epoch, step) after which a trial is validated: the end, and with ASHA each rung before it."""
    cap = cfg.train.max_steps or math.inf
    epochs = [e for e in rungs if e < cfg.train.epochs] * asha + [cfg.train.epochs]
    out = {}
    for e in epochs:
        out.setdefault(int(min(e * steps_per_epoch, cap)), e)
    return [(e, s) for s, e in sorted(out.items())]


def asha_rungs(max_epochs: int, grace: int = 1, factor: int = 2) -> list[int]:
    return [grace * factor**k for k in range(0, 32) if grace * factor**k <= max_epochs]


def trial(config: dict, settings: SweepSettings) -> None:
    """The Tune function trainable: fine-tune (Ray Train) -> sample -> student -> report val_acc."""
    import ray

    from rdistill.checkpoint import latest_checkpoint
    from rdistill.data import load_dataset
    from rdistill.train_ray import fit_ray, step_of

    trial_dir = Path(settings.out).resolve() / "trials" / tune.get_context().get_trial_id()
    cfg = trial_config(settings, config, trial_dir / "finetune")
    n = len(load_dataset(cfg.data.name, image_size=cfg.data.image_size, root=cfg.data.root).train)
    done = step_of(latest_checkpoint(cfg.out)) or 0  # a resumed trial: stages fine-tuned past were reported
    for epoch, step in stages(cfg, n // cfg.train.batch_size, settings.asha, asha_rungs(settings.space.epochs[1])):
        if step < done:
            continue
        fit_ray(replace(cfg, train=replace(cfg.train, max_steps=step)), num_workers=settings.num_workers,
                use_gpu=settings.use_gpu, name="finetune", storage_path=str(trial_dir / "ray"),
                train_callbacks=[LossReport()])
        set_dir = trial_dir / f"surrogate-epoch{epoch:02d}"
        acc = ray.get(evaluate_remote(settings, cfg.out, set_dir, "validation", [settings.seed]))[0]
        tune.report({METRIC: acc["final_acc"], "val_best_acc": acc["best_acc"], "epoch": epoch, "step": step})


def evaluate(settings: SweepSettings, run_dir: str, set_dir: str, split: str, seed: int) -> dict:
    """Sample the run's surrogate set (in this process; kept, so a rerun skips it), train a student on it,
    test it on `split`: "validation" (the carve of the train split) or "test" (the real test split)."""
    import torch

    from rdistill.data.validation import validation_split
    from rdistill.evaluate import DataSpec, load_data, train_tensors
    from rdistill.protocols import get_protocol
    from rdistill.sample import SampleJob, run_sampling
    from rdistill.student_training import train_and_test

    run_sampling(SampleJob(run_dir=run_dir, out=set_dir, ipc=settings.ipc, seed=settings.seed,
                           steps=settings.sample_steps, workers=0), progress=False)
    protocol = get_protocol(settings.protocol, epochs=settings.student_epochs)
    spec = DataSpec(settings.base.data.name, settings.base.data.root, protocol.image_size)  # at the protocol's size
    x, y = train_tensors(spec, set_dir, settings.ipc)  # (K * ipc, C, S, S), (K * ipc,)
    data = load_data(spec)
    held_out = validation_split(data, settings.val_fraction).test if split == "validation" else data.test
    return train_and_test(settings.student or protocol.students[0], protocol, x, y,
                          held_out.images(range(len(held_out))), held_out.labels, num_classes=data.num_classes,
                          seed=seed, device="cuda" if torch.cuda.is_available() else "cpu")


def _evaluate_task(cpus: float, *args) -> dict:
    from rdistill.cluster import limit_threads

    limit_threads(cpus)
    return evaluate(*args)


def evaluate_remote(settings: SweepSettings, run_dir, set_dir, split: str, seeds: list[int]) -> list:
    """`evaluate` as Ray tasks (one per seed; their refs), sized like a Train worker: a GPU where there are GPUs."""
    import ray

    from rdistill.cluster import task_options
    from rdistill.train_ray import CPUS_PER_WORKER

    opts = task_options(settings.use_gpu, CPUS_PER_WORKER)
    task = ray.remote(_evaluate_task).options(**opts, scheduling_strategy="DEFAULT")  # not in the trial's bundle
    return [task.remote(opts["num_cpus"], settings, str(run_dir), str(set_dir), split, s) for s in seeds]


# --- The sweep -----------------------------------------------------------------------------------


def max_concurrent(settings: SweepSettings) -> int:
    """Trials that fit at once: the cluster's GPUs (or CPUs) over what one trial's workers take."""
    from rdistill.cluster import resources
    from rdistill.train_ray import CPUS_PER_WORKER, scaling_uses_gpu

    res = resources()
    per_trial = settings.num_workers * (1 if scaling_uses_gpu(settings.use_gpu) else CPUS_PER_WORKER)
    fit = int((res.gpus if scaling_uses_gpu(settings.use_gpu) else res.cpus) // per_trial)
    if fit < 1:
        raise ValueError(f"one trial needs {settings.num_workers} workers but the cluster has {res}; use fewer workers")
    return min(settings.max_concurrent or fit, fit, settings.trials)


def build_tuner(settings: SweepSettings, trial_fn=trial):
    """A fresh Tuner: Optuna (the paper's point first), optional ASHA, MLflow logging, no timestamps."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from rdistill.sweep_report import MlflowTrials

    points = [PAPER_POINT] if settings.space.contains(PAPER_POINT) else []
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=settings.space.epochs[1], grace_period=1, reduction_factor=2)
                 if settings.asha else FIFOScheduler())
    return tune.Tuner(
        trainable(settings, trial_fn),
        param_space=settings.space.param_space(),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=settings.trials,
                                    search_alg=OptunaSearch(points_to_evaluate=points, seed=settings.seed),
                                    scheduler=scheduler, max_concurrent_trials=max_concurrent(settings)),
        run_config=tune.RunConfig(name=settings.name, storage_path=str(Path(settings.out).resolve()),
                                  callbacks=[MlflowTrials(settings)], verbose=1),
    )


def trainable(settings: SweepSettings, trial_fn=trial):
    """The trial function with its settings, reserving almost nothing: its Train workers hold the resources."""
    return tune.with_resources(tune.with_parameters(trial_fn, settings=settings), {"cpu": 0.01})


def open_tuner(settings: SweepSettings, resume: bool, trial_fn=trial):
    """A new Tuner, or (resume) the interrupted sweep of settings.out restored with its errored trials."""
    path = check_resume(settings, resume)
    if resume:
        return tune.Tuner.restore(str(path), trainable(settings, trial_fn), resume_errored=True)
    return build_tuner(settings, trial_fn)


# --- From settings to a report ---------------------------------------------------------------------


@dataclass
class SweepOutcome:
    trials: int  # trials that reported a validation accuracy
    failed: int  # trials that errored (`--resume` retries them)
    best: dict | None = None  # the best trial's axes, val_acc, trial_id
    test: dict | None = None  # {"best": {"final": [...], "best": [...]}, "paper": {...}}: test accuracies
    plots: list = field(default_factory=list)
    table: str = ""


def check_resume(settings: SweepSettings, resume: bool) -> Path:
    """The sweep's Tune folder: it must hold a sweep to resume, and none to start afresh."""
    path = Path(settings.out).resolve() / settings.name
    exists = tune.Tuner.can_restore(str(path))
    if resume and not exists:
        raise FileNotFoundError(f"no sweep to resume in {path}; run it without --resume first")
    if not resume and exists:
        raise ValueError(f"{path} holds a sweep already: pass --resume to complete it, or choose another --out")
    return path


def preflight(settings: SweepSettings, address: str | None = None, resume: bool | None = None) -> int:
    """Every check that needs no work (ranges, budget, resume state, Ray address, GPUs, cluster size);
    returns the number of trials that run at once."""
    from rdistill.cluster import connect

    settings.check()
    if resume is not None:
        check_resume(settings, resume)
    connect(address)
    return max_concurrent(settings)  # GPUs asked for where none exist raise ValueError


def run_sweep(settings: SweepSettings, *, resume: bool = False, address: str | None = None,
              trial_fn=trial, report: bool = True) -> SweepOutcome:
    """Run (or complete) the sweep, then plot it and test the best configuration and the paper's."""
    preflight(settings, address)
    if not Path(settings.base.model.init).exists():
        raise FileNotFoundError(f"base model {settings.base.model.init} does not exist")
    Path(settings.out).mkdir(parents=True, exist_ok=True)
    results = open_tuner(settings, resume, trial_fn).fit()
    from rdistill.sweep_report import trial_rows

    rows, failed = trial_rows(results), sum(r.error is not None for r in results)
    outcome = SweepOutcome(trials=len(rows), failed=failed)
    if failed:
        print(f"{failed} of {len(results)} trials failed (errors under {results.experiment_path}); "
              "`--resume` retries them")
    if report and rows and not failed:
        from rdistill.sweep_report import final_report

        final_report(settings, rows, outcome)
    return outcome


def ensure_base(cfg: RunConfig) -> Path:
    """Pretrain the base model cfg describes into cfg.out (in this process), resuming or reusing what is there."""
    from rdistill.checkpoint import latest_checkpoint
    from rdistill.cluster import limit_threads
    from rdistill.finetune import train

    limit_threads(1)  # beside a running Ray on a small machine, more threads thrash (STACK.md)
    verb = "pretraining" if latest_checkpoint(cfg.out) is None else "checking (and completing) the"
    print(f"{verb} base model in {cfg.out}; later sweeps reuse it")
    return train(cfg, progress=True)
