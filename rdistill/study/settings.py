"""A study's settings and what every stage shares: the method grid and the minutes each stage took."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rdistill import storage
from rdistill.config import RunConfig

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
    draws: int = 1  # each chosen generated set and the random coreset made this often (seeds +0, +1, ...)
    student_epochs: int | None = None  # None: the protocol's (small: 300)
    full_epochs: int | None = 20  # the full-data bound's epochs (300 over 24,000 images is hours here); None: skip it
    sample_steps: int = 50
    sample_seed: int = 0
    workers: int = 2  # Ray tasks at once: fine-tunes (in a folder), validation, the matrix (0: this process)
    judge_epochs: int | None = 3  # the fidelity judge's epochs on the real train split (None: no fidelity)
    experiment: str = "rdistill-study"
    tracking_uri: str | None = None


def grid_of(s: StudySettings, method: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(guidance scales, IPCs) a generated method is sampled, validated and evaluated at: an ablation's own."""
    return (s.ablation_guidance or s.guidance, s.ablation_ipcs) if method in s.ablation else (s.guidance, s.ipcs)


def log_minutes(s: StudySettings, what: str, start: float) -> None:
    """One line per stage, and minutes.json for the write-up: the minutes since `start` (time.perf_counter)."""
    add_minutes(s, what, (time.perf_counter() - start) / 60)


def add_minutes(s: StudySettings, what: str, minutes: float) -> None:
    path = storage.join(s.out, "minutes.json")
    table = storage.read_json(path)
    table[what] = table.get(what, 0.0) + minutes
    storage.write_json(path, table)
    print(f"[study] {what}: {minutes:.1f} min")
