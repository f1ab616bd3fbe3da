"""One typed, frozen run configuration: YAML files and dotted `key=value` overrides, checked by type.

    cfg = load_config("run.yaml", ["train.lambda_r=0.004", "data.name=fashion-mnist"])
    save_config(cfg, run_dir / "config.yaml")

Unknown keys and values of the wrong type are errors that name the key. The resolved config is saved
with every checkpoint, shard manifest and MLflow run.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rdistill.common.files import atomic_write_text

METHODS = ("minimax", "difffit", "pretrain")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads 2e-3 and 1E5 as floats (YAML 1.2; PyYAML wants 2.0e-3)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document in `text`; a syntax error is a ValueError naming `where` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where} is not valid YAML{at}: {problem}") from None


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits | fashion-mnist | imagefolder:PATH | imagewoof | imagenette | imageidc | imagenet1k
    root: str | None = None  # the dataset's folder (ImageNet root, Fashion-MNIST IDX folder)
    image_size: int | None = None  # None: the dataset's native size (digits 8, fashion-mnist 28, a folder: its images')
    hflip: bool | None = None  # random horizontal flip; None: the dataset's own default
    codec: str = "pixel"  # "pixel" (identity on [-1, 1]) or "vae:PATH" (SD AutoencoderKL folder)
    cache_latents: bool = True  # encode once (and the flipped view); False = encode every step (reference)
    latent_store: str | None = None  # VAE latents shared by runs, by class (ImageNet scale); None: run folder
    holdout: float = 0.0  # fraction of each class's train images withheld for validation (sweeps); 0: none


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "dit-tiny"  # dit-tiny, dit-s/2 ... dit-xl/2 (rdistill.models.dit.PRESETS)
    init: str | None = None  # base weights: an rdistill run folder, a diffusers folder or an original DiT .pt
    num_classes: int | None = None  # label space of a new model; None: the dataset's classes


@dataclass(frozen=True)
class TrainConfig:
    method: str = "minimax"  # minimax | difffit (no criteria) | pretrain (all parameters, from scratch)
    representativeness: str = "minimax"  # minimax | mean (Table 5 "without minimax") | off
    diversity: str = "minimax"  # minimax | mean | off
    lambda_r: float = 0.002  # Sec. 4.1
    lambda_d: float = 0.008  # Sec. 4.1
    memory_size: int = 64  # N_M, Fig. 6d
    centred: bool = False  # not the paper's: the criteria's cosines on latents minus the training set's mean latent
    epochs: int = 8  # reference: 8 epochs over the subset
    max_steps: int | None = None  # stop early (smoke tests); None: epochs decide
    batch_size: int = 8  # global batch of the reference
    lr: float = 1e-3  # AdamW, constant
    weight_decay: float = 0.0
    ema_decay: float = 0.9999  # EMA of all parameters, every step; sampling uses it
    label_dropout: float = 0.1  # kept on: classifier-free guidance needs it
    seed: int = 0
    ckpt_every: int = 500  # steps between checkpoints (and at the end)
    log_every: int = 25  # steps between loss log lines
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast of the DiT's forward, CUDA or CPU)
    compile: bool = False  # torch.compile the DiT (worth it on a GPU; minutes of compiling on a CPU)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/default"  # the run folder: checkpoints, config, logs


def validate(cfg: RunConfig) -> RunConfig:
    """Values each field admits; raises ValueError naming the key and the value."""
    t = cfg.train
    checks = [
        ("train.method", t.method in METHODS, f"one of {METHODS}"),
        ("train.representativeness", t.representativeness in ("minimax", "mean", "off"), "minimax, mean or off"),
        ("train.diversity", t.diversity in ("minimax", "mean", "off"), "minimax, mean or off"),
        ("train.lambda_r", t.lambda_r >= 0, ">= 0"),
        ("train.lambda_d", t.lambda_d >= 0, ">= 0"),
        ("train.memory_size", t.memory_size >= 1, ">= 1"),
        ("train.epochs", t.epochs >= 1, ">= 1"),
        ("train.max_steps", t.max_steps is None or t.max_steps >= 1, ">= 1 or null"),
        ("train.batch_size", t.batch_size >= 1, ">= 1"),
        ("train.lr", t.lr > 0, "> 0"),
        ("train.ema_decay", 0 <= t.ema_decay < 1, "in [0, 1)"),
        ("train.label_dropout", 0 <= t.label_dropout < 1, "in [0, 1)"),
        ("train.ckpt_every", t.ckpt_every >= 1, ">= 1"),
        ("train.precision", t.precision in ("fp32", "bf16"), "fp32 or bf16"),
        ("data.image_size", cfg.data.image_size is None or cfg.data.image_size >= 1, ">= 1"),
        ("data.holdout", 0 <= cfg.data.holdout < 1, "in [0, 1)"),
        ("data.codec", cfg.data.codec == "pixel" or cfg.data.codec.startswith("vae:"), "'pixel' or 'vae:PATH'"),
    ]
    for key, ok, expected in checks:
        if not ok:
            value = _get(cfg, key)
            raise ValueError(f"{key} = {value!r} is invalid: expected {expected}")
    return cfg


# --- Overrides, YAML -------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: RunConfig | None = None) -> RunConfig:
    """`base` (default RunConfig()), then the YAML file at `path`, then `key=value` overrides."""
    cfg = base or RunConfig()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        if not path.is_file():
            raise ValueError(f"config file {path} is a folder, not a YAML file")
        tree = parse_yaml(path.read_text(), f"config file {path}")
        if tree is not None and not isinstance(tree, dict):
            raise ValueError(f"config file {path} holds a YAML {type(tree).__name__}, not a mapping; write "
                             "sections as keys, e.g. 'train:' then '  lr: 0.001' on the next line")
        cfg = merge(cfg, tree or {})
    return validate(merge(cfg, parse_overrides(overrides)))


def parse_overrides(overrides: list[str]) -> dict:
    """["train.lr=0.1", "out=x"] -> {"train": {"lr": "0.1"}, "out": "x"}: each value its text, `.parsed` its YAML."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _Text(value, parse_yaml(value, f"override {item!r}")) if value != "" else None
    return tree


class _Text(str):
    """An override's text and its YAML value: a str field keeps the text (out=1e5 is the folder "1e5")."""

    def __new__(cls, text: str, parsed: Any):
        self = super().__new__(cls, text)
        self.parsed = parsed
        return self


def merge(cfg, tree: dict, prefix: str = ""):
    """A copy of the dataclass `cfg` with the values of the nested dict `tree`, type-checked."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {name!r}; known: {sorted(prefix + k for k in fields)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            value = value.parsed if isinstance(value, _Text) else value
            if not isinstance(value, dict):
                raise ValueError(f"config key {name!r} is a section; give it keys, not {value!r}")
            changes[key] = merge(current, value, prefix=f"{name}.")
        else:
            changes[key] = _coerce(name, value, hints[key])
    return dataclasses.replace(cfg, **changes)


def _coerce(name: str, value: Any, hint) -> Any:
    """Check `value` against the field's type; ints are accepted where floats are expected."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if isinstance(value, _Text):
        value = str(value) if str in options and value.parsed is not None else value.parsed
    if value is None and type(None) in options:
        return None
    for t in options:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and type(value) is t:
            return value
    expected = " or ".join(getattr(t, "__name__", str(t)) for t in options)
    raise ValueError(f"config key {name!r} expects {expected}, got {value!r}")


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(tree: dict) -> RunConfig:
    return validate(merge(RunConfig(), tree))


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.001}} -> {"train.lr": 0.001}: a nested config (or any nested mapping) as dotted
    keys, e.g. for MLflow params; an empty mapping is a value of its own."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def save_config(cfg, path: str | Path) -> None:
    """Write atomically (a temporary file renamed): other processes may be reading it."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_config(path: str | Path) -> RunConfig:
    return from_dict(parse_yaml(Path(path).read_text(), str(path)))
