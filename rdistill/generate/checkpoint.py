"""A run folder: what a training run leaves for the stages after it, and how to read it back.

    run/
      config.yaml                 the resolved RunConfig
      model.json                  architecture, base weights, PEFT, classes and their DiT labels, codec
      losses.csv                  one row per logged step
      checkpoints/step-000500/    trainable.safetensors  the live trainable parameters
                                  ema.safetensors        their EMA (sampling uses it)
                                  optimizer.pt           AdamW state
                                  memory.safetensors     the minimax memories (rank 0's)
                                  memory-rank1.safetensors ...  each other DDP rank's (Ray Train merges them in)
      ranks/rank-1/step-000500.safetensors   rank 1's memories as its process wrote them (local side copy)
                                  state.json             step, epoch
Only trainable parameters are stored: under Difffit ~1.7 M for DiT-XL/2, so a checkpoint is a few MB;
the frozen rest comes from the base named in model.json.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rdistill.common.files import atomic_path, atomic_write_text

CKPT_DIR = "checkpoints"


@dataclass(frozen=True)
class RunMeta:
    """model.json: everything needed to rebuild the trained DiT and to label its samples."""

    architecture: dict  # DiTTransformer2DModel arguments
    init: str | None  # base weights (absolute path) or None (trained from scratch, all parameters saved)
    peft: str  # "full" | "difffit"
    dataset: str
    classes: list[str]
    model_labels: list[int]  # DiT label of each class
    codec: str
    latent_shape: list[int]  # (C, H, W)
    base: dict | None = None  # the exact base weights trained from: {path, checkpoint, sha256} (models.loading)

    def save(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / "model.json", json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunMeta":
        path = Path(run_dir) / "model.json"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} is not an rdistill run folder (no model.json)")
        return cls(**json.loads(path.read_text()))


# What a complete checkpoint folder holds (state.json, written last, marks it complete).
CHECKPOINT_FILES = ("trainable.safetensors", "ema.safetensors", "memory.safetensors", "optimizer.pt", "state.json")


def check_checkpoint(ckpt: Path, files: tuple[str, ...] = CHECKPOINT_FILES) -> Path:
    """`ckpt` if it holds `files`; else FileNotFoundError naming the missing ones and what to do."""
    missing = [f for f in files if not (Path(ckpt) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {ckpt} lacks {', '.join(missing)} (a partial copy?): restore the "
                                "files, or move that folder away to use the run's previous checkpoint")
    return Path(ckpt)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step-{step:07d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None. A run published to storage (a URI) is read
    from this node's copy of it (rdistill.storage.local_copy); one not finished publishing has none yet."""
    from rdistill import storage

    if storage.is_uri(run_dir):
        if not storage.is_complete(run_dir):
            return None
        run_dir = storage.local_copy(run_dir)
    folder = Path(run_dir) / CKPT_DIR
    done = sorted(p for p in folder.glob("step-*") if (p / "state.json").exists()) if folder.exists() else []
    return done[-1] if done else None


def save_checkpoint(run_dir: Path, step: int, *, trainable: dict, ema: dict, optimizer: dict,
                    memory: dict, state: dict, keep: int = 2) -> Path:
    """Write a checkpoint folder atomically (a temporary folder renamed); keep the newest `keep`."""
    final = checkpoint_dir(run_dir, step)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, tmp / "trainable.safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
        save_file(memory, tmp / "memory.safetensors")
        torch.save(optimizer, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))  # written last: marks the folder complete
    for old in sorted((Path(run_dir) / CKPT_DIR).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


RANKS_DIR = "ranks"


def rank_memory_name(rank: int) -> str:
    return "memory.safetensors" if rank == 0 else f"memory-rank{rank}.safetensors"


def rank_memory_path(run_dir: Path, step: int, rank: int) -> Path:
    """Where DDP rank `rank` (> 0) keeps the memories of a checkpoint step beside the run's checkpoints."""
    return Path(run_dir) / RANKS_DIR / f"rank-{rank}" / f"step-{step:07d}.safetensors"


def save_rank_memory(run_dir: Path, step: int, rank: int, memory: dict, keep: int = 2) -> Path:
    """Rank `rank` (> 0) saves its own minimax memories at a checkpoint step (atomically); keeps the newest."""
    path = rank_memory_path(run_dir, step, rank)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in memory.items()}, tmp)
    for old in sorted(path.parent.glob("step-*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_rank_memory(ckpt: Path, rank: int) -> dict | None:
    """A rank's memories at checkpoint `ckpt`: in the checkpoint folder (Ray Train's copy), else the rank's side
    copy in the run folder; None if neither exists (a checkpoint from before memories were saved per rank)."""
    step = json.loads((Path(ckpt) / "state.json").read_text())["step"]
    for path in (Path(ckpt) / rank_memory_name(rank), rank_memory_path(Path(ckpt).parent.parent, step, rank)):
        if path.is_file():
            return load_file(path)
    return None


def load_checkpoint(ckpt: Path, device: str | torch.device = "cpu") -> dict:
    """The tensors and state of a checkpoint folder."""
    return {
        "trainable": load_file(ckpt / "trainable.safetensors", device=str(device)),
        "ema": load_file(ckpt / "ema.safetensors", device=str(device)),
        "memory": load_file(ckpt / "memory.safetensors"),
        "optimizer": torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True),
        "state": json.loads((ckpt / "state.json").read_text()),
    }


def weights_hash(ckpt: Path) -> str:
    """sha256 (first 16 hex digits) of a checkpoint's EMA weights: names a generator in shard manifests."""
    check_checkpoint(ckpt, ("ema.safetensors",))
    with open(Path(ckpt) / "ema.safetensors", "rb") as f:  # streamed: a full DiT-XL/2 EMA is 2.7 GB
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


class LossLog:
    """losses.csv, truncated to the resumed step so a crash between checkpoints leaves no duplicates."""

    FIELDS = ["step", "loss_total", "loss_mse", "loss_vb", "loss_pos", "loss_neg", "seconds"]

    def __init__(self, path: Path, start: int):
        self.path = path
        rows = []
        if path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, metrics: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS, extrasaction="ignore").writerow(metrics)
