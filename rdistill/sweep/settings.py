"""What a Fig. 6 sweep is: the four axes and their search space, the paper's point, the settings of a
sweep, the fine-tuning config of one trial, and what a finished sweep returns. Imported by every other
module of rdistill.sweep and importing none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ray import tune

from rdistill.config import RunConfig, merge, validate

AXES = ("epochs", "lambda_r", "lambda_d", "memory_size", "guidance")
# Sec. 4.1, 4.6 and Fig. 6's dashes; guidance 4.0 as SPEC.md section 3
PAPER_POINT = {"epochs": 8, "lambda_r": 0.002, "lambda_d": 0.008, "memory_size": 64, "guidance": 4.0}
METRIC = "val_acc"  # the student's final accuracy (%) on the validation carve
LOSSES = ("loss_total", "loss_mse", "loss_vb", "loss_pos", "loss_neg")


@dataclass(frozen=True)
class Space:
    """The search ranges (low, high), both included; the defaults are the ranges of Fig. 6."""

    epochs: tuple[int, int] = (1, 12)  # Fig. 6a plots 0-12 (0 is the base itself); uniform integers
    lambda_r: tuple[float, float] = (0.001, 0.01)  # Fig. 6b (log-uniform)
    lambda_d: tuple[float, float] = (0.002, 0.03)  # Fig. 6c (log-uniform)
    memory_size: tuple[int, int] = (16, 1024)  # Fig. 6d: the powers of 2 in the range
    guidance: tuple[float, float] = (1.0, 6.0)  # classifier-free guidance scale (uniform); below 1 mixes toward unconditional

    def check(self) -> None:
        for axis in AXES:
            low, high = getattr(self, axis)
            if low > high:
                raise ValueError(f"search range of {axis}: low {low} > high {high}")
            if (axis == "guidance" and low < 0) or (axis != "guidance" and low <= 0) or (axis == "epochs" and low < 1):
                least = {"epochs": ">= 1", "guidance": ">= 0"}.get(axis, "> 0")
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
                "memory_size": sizes[0] if len(sizes) == 1 else tune.choice(sizes),
                "guidance": axis("guidance", tune.uniform)}

    def contains(self, point: dict) -> bool:
        inside = all(getattr(self, a)[0] <= point[a] <= getattr(self, a)[1] for a in AXES)
        return inside and point["memory_size"] in self.memory_sizes()


@dataclass(frozen=True)
class SweepSettings:
    out: str  # the sweep's location (a folder or a storage URI): trials/, the plots, Tune's state in <out>/<name>
    base: RunConfig  # what every trial fine-tunes with (model.init = the base model); the axes override it
    space: Space = field(default_factory=Space)
    trials: int = 8  # the budget: trials in all, the paper's point first
    ipc: int = 10  # images per class of each trial's surrogate set
    sample_steps: int = 50  # sampling steps (SPEC.md section 3)
    protocol: str = "small"  # the student's training protocol (rdistill.evaluate.protocols)
    student: str | None = None  # None: the protocol's first student
    student_epochs: int | None = None  # None: the protocol's
    val_fraction: float = 0.2  # the share of each class of the train split held out for validation
    test_seeds: int = 1  # students per configuration in the final test report
    seed: int = 0  # Optuna's sampler, the validation carve, sampling noise, the students
    num_workers: int = 1  # Ray Train workers per trial (DDP when > 1)
    use_gpu: bool | None = None  # True: one GPU per Train worker and per evaluation task (declared); else CPUs
    max_concurrent: int | None = None  # None: on GPUs every trial (placement decides), on CPUs what they hold
    worker_resources: dict | None = None  # custom Ray resources per Train worker and evaluation task (a node type)
    resource_wait: float = 600.0  # seconds to wait for a node that holds a trial's worker (an autoscaled GPU node)
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
        from rdistill.evaluate.protocols import get_protocol

        get_protocol(self.protocol)  # an unknown protocol raises ValueError naming the known ones

    @property
    def gpus(self) -> float:
        """GPUs per Train worker and per evaluation task, as declared (--gpu, or a cuda train.device)."""
        return 1.0 if self.use_gpu or self.base.train.device.startswith("cuda") else 0.0

    @property
    def tracking_uri(self) -> str:
        from rdistill.tracking import mlflow_uri

        return mlflow_uri(self.out, self.tracking)


@dataclass
class SweepOutcome:
    trials: int  # trials that reported a validation accuracy
    failed: int  # trials that errored (`--resume` retries them)
    best: dict | None = None  # the best trial's axes, val_acc, trial_id
    test: dict | None = None  # {"best": {"final": [...], "best": [...]}, "paper": {...}}: test accuracies
    plots: list = field(default_factory=list)
    table: str = ""


def trial_config(settings: SweepSettings, config: dict, run_dir: str) -> RunConfig:
    """The fine-tuning config of a trial: the base with the trial's values, its run folder under the trial."""
    values = {"epochs": int(config["epochs"]), "lambda_r": float(config["lambda_r"]),
              "lambda_d": float(config["lambda_d"]), "memory_size": int(config["memory_size"])}
    data = {"holdout": settings.val_fraction}  # the generator never sees the validation images
    return validate(merge(settings.base, {"train": values, "data": data, "out": str(run_dir)}))


def trial_dir(settings: SweepSettings, trial_id: str) -> str:
    """A trial's location: <out>/trials/<trial_id> (a folder, or a key prefix of the sweep's storage URI)."""
    from rdistill import storage

    return storage.join(settings.out, "trials", trial_id)
