"""Training one DiT: minimax or Difffit fine-tuning of a base model, or pretraining from scratch.

`train(cfg)` is a plain function for one process (Ray Train runs it per worker, see rdistill.distributed.train_ray).
A step (Algorithm 1): draw latents z0 of a batch, t ~ U[0, 1000), noise; drop labels to the null class
with p = 0.1; L = L_diffusion + lambda_r * sum_c pos_c + lambda_d * sum_c neg_c; AdamW; EMA; then enqueue
z0 and x0_hat in the class memories. All randomness of step k comes from a generator seeded by
(seed, k) and the data order of epoch e from (seed, e), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from rdistill.common.devices import resolve_device, to_device
from rdistill.common.seeds import STREAM_SHUFFLE, STREAM_STEP, derive
from rdistill.config import RunConfig, read_config, save_config, to_dict
from rdistill.data import load_dataset
from rdistill.data.base import Dataset
from rdistill.data.validation import validation_split
from rdistill.generate import checkpoint as ckpt_io
from rdistill.generate.diffusion import NUM_TRAIN_STEPS, Schedule, diffusion_loss, linear_schedule, q_sample
from rdistill.generate.ema import ema_decay, update_ema, warn_if_ema_cold
from rdistill.generate.minimax import MinimaxMemory
from rdistill.generate.sampler import schedule_on
from rdistill.models.codec import load_codec
from rdistill.models.difffit import apply_difffit, count_parameters, trainable_parameters
from rdistill.models.dit import architecture, autocast, build_dit, dit_callable, init_dit_, num_classes_of
from rdistill.models.loading import base_pin, load_base, load_named

# Keys that may change between an interrupted run and its resumption: they do not change the result.
RESUME_FREE_KEYS = ("max_steps", "ckpt_every", "log_every")


@dataclass
class Callbacks:
    """Where the loop reports to: Ray Train, MLflow, a test. All optional."""

    on_log: Callable[[int, dict], None] | None = None  # (step, metrics)
    on_checkpoint: Callable[[int, Path], None] | None = None  # (step, checkpoint folder)
    should_stop: Callable[[int], bool] | None = None  # (step) -> stop after this step


@dataclass
class World:
    """Which part of each global batch this process trains on (DDP); one process by default."""

    rank: int = 0
    size: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = field(default=lambda m: m)


def train(cfg: RunConfig, *, callbacks: Callbacks = Callbacks(), world: World = World(),
          progress: bool = True, run_dir: Path | None = None) -> Path:
    """Train (or resume) the run `cfg.out` in `run_dir` (default cfg.out; Ray Train: this node's scratch copy
    of a run stored at a URI); returns the run folder."""
    run_dir = Path(cfg.out if run_dir is None else run_dir)
    t = cfg.train
    device = resolve_device(t.device)

    # Setup data and latents:
    dataset = load_dataset(cfg.data.name, image_size=cfg.data.image_size, root=cfg.data.root)
    if cfg.data.holdout > 0:  # the generator never sees the images a sweep validates on
        dataset = validation_split(dataset, cfg.data.holdout)
    hflip = dataset.hflip if cfg.data.hflip is None else cfg.data.hflip
    N = len(dataset.train)
    steps_per_epoch = N // t.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size {t.batch_size} is larger than the {N} training images")
    total = steps_per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, steps_per_epoch * t.epochs)

    # Setup model (checked against the data before the run folder gets anything, e.g. a latent cache):
    codec = load_codec(cfg.data.codec, dataset.channels, device=device)  # the VAE encodes on the training device
    z_shape = (codec.latent_channels, *(dataset.image_size // codec.downsample,) * 2)  # (C, H, W)
    dit, meta = build_model(cfg, dataset, z_shape, run_dir)
    if ckpt_io.latest_checkpoint(run_dir) is not None:
        check_same_run(cfg, read_config(run_dir / "config.yaml"), run_dir)
    latents = latent_source(cfg, dataset, hflip, run_dir, progress and world.rank == 0, codec)

    # Optimiser, EMA and memories:
    dit.to(device).train()
    params = trainable_parameters(dit)
    opt = torch.optim.AdamW(params.values(), lr=t.lr, weight_decay=t.weight_decay)
    ema = {k: p.detach().clone().float() for k, p in params.items()}  # initialised from the base
    centre = mean_latent(latents, N, t.seed) if t.centred and t.method == "minimax" else None
    memory = MinimaxMemory(t.memory_size, math.prod(z_shape), rep=t.representativeness, div=t.diversity, centre=centre)
    start = resume_or_start(cfg, run_dir, meta, dit, opt, ema, memory, device, world.rank)
    model_fn = dit_callable(world.wrap(dit), compile=t.compile)
    schedule = schedule_on(linear_schedule(), device)  # indexed by device timesteps: no copy per step
    null = num_classes_of(dit)
    model_labels = torch.tensor(dataset.model_labels)
    total_params, n_train = count_parameters(dit)
    log = ckpt_io.LossLog(run_dir / "losses.csv", start) if world.rank == 0 else None

    # Train:
    bar = tqdm(range(start, total), initial=start, total=total, disable=not progress or world.rank != 0,
               desc=f"{t.method} {n_train:,}/{total_params:,} params")
    tic = time.time()
    for step in bar:
        g = torch.Generator().manual_seed(derive(t.seed, STREAM_STEP, step))
        idx = batch_indices(t.seed, step, steps_per_epoch, N, t.batch_size)[world.rank :: world.size]
        z0, y = latents.batch(idx, g)  # (n, C, H, W), (n,) dataset classes
        metrics = train_step(model_fn, schedule, memory, to_device(z0, device), y, model_labels[y], null, g, cfg)
        opt.zero_grad(set_to_none=True)
        metrics.pop("loss").backward()
        opt.step()
        update_ema(ema, params, ema_decay(t, step))
        done = step + 1
        if log and (done % t.log_every == 0 or done == total):
            metrics = {k: v.item() for k, v in metrics.items()}  # the step's only host syncs, at log steps
            metrics.update(step=done, seconds=round(time.time() - tic, 2))
            log.write(metrics)
            bar.set_postfix(loss=f"{metrics['loss_total']:.4f}")
            if callbacks.on_log:
                callbacks.on_log(done, metrics)
        stop = callbacks.should_stop is not None and callbacks.should_stop(done)
        if done % t.ckpt_every == 0 or done == total or stop:
            if world.rank == 0:
                path = ckpt_io.save_checkpoint(
                    run_dir, done, trainable=params, ema=ema, optimizer=opt.state_dict(),
                    memory=memory.state_dict(), state={"step": done, "epoch": step // steps_per_epoch},
                )
            else:  # every rank's memories are its own: a resumed rank gets them back (not rank 0's)
                path = ckpt_io.save_rank_memory(run_dir, done, world.rank, memory.state_dict())
            if callbacks.on_checkpoint:
                callbacks.on_checkpoint(done, path)
        if stop:
            break
    warn_if_ema_cold(t, done if total > start else start)
    return run_dir


def train_step(model_fn, schedule: Schedule, memory: MinimaxMemory, z0, y, y_model, null: int,
               g: torch.Generator, cfg: RunConfig) -> dict:
    """The loss of one batch (key "loss", with gradients) and its parts as detached 0-d tensors (read them at
    log steps only: `.item()` waits for the device); updates the memories. y: dataset classes on the CPU."""
    t = cfg.train
    n, device = len(z0), z0.device
    timesteps = to_device(torch.randint(0, NUM_TRAIN_STEPS, (n,), generator=g), device)  # pinned, non-blocking
    noise = to_device(torch.randn(z0.shape, generator=g), device)
    dropped = torch.rand(n, generator=g) < t.label_dropout
    labels = to_device(torch.where(dropped, torch.full_like(y_model, null), y_model), device)
    xt = q_sample(schedule, z0, timesteps, noise)
    with autocast(device, t.precision):
        out = model_fn(xt, timesteps, labels)
    d = diffusion_loss(schedule, out.float(), z0, xt, timesteps, noise)
    loss = d.per_sample.mean()
    metrics = {"loss_mse": d.mse.detach().mean(), "loss_vb": d.vb.detach().mean()}
    if t.method == "minimax":
        x0, z = d.x0.flatten(1), z0.flatten(1)  # (n, C*H*W)
        terms = memory.criteria(x0, z, y)  # classes grouped on the host: no sync
        loss = loss + t.lambda_r * terms.pos + t.lambda_d * terms.neg
        memory.update(x0, z, y)
        metrics.update(loss_pos=terms.pos.detach(), loss_neg=terms.neg.detach())
    metrics.update(loss_total=loss.detach())
    metrics["loss"] = loss
    return metrics


# --- Pieces of the loop ----------------------------------------------------------------------------


def batch_indices(seed: int, step: int, steps_per_epoch: int, n: int, batch: int) -> torch.Tensor:
    """The global batch of a step: a slice of its epoch's permutation (the last partial batch dropped)."""
    epoch, k = divmod(step, steps_per_epoch)
    return epoch_permutation(seed, epoch, n)[k * batch : (k + 1) * batch]


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of an epoch, drawn once per epoch (callers slice it, never write to it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive(seed, STREAM_SHUFFLE, epoch)))


def mean_latent(latents, n: int, seed: int, limit: int = 4096, chunk: int = 256) -> torch.Tensor:
    """The mean of up to `limit` training latents (a fixed draw of the seed), flattened (D,): train.centred's centre."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:limit]
    total = sum(latents.batch(part, g)[0].double().sum(0) for part in idx.split(chunk))
    return (total / len(idx)).flatten().float()


def latent_source(cfg: RunConfig, dataset: Dataset, hflip: bool, run_dir: Path, progress: bool, codec=None):
    """Cached latent moments (encoded once, reused from the run folder) or per-step encoding (parity).
    `codec` (default: loaded on the CPU) encodes on its device; the latents stay on the host (moved per batch)."""
    from rdistill.generate.latents import PerStepEncoder, load_or_encode

    codec = codec or load_codec(cfg.data.codec, dataset.channels)
    if not cfg.data.cache_latents:
        return PerStepEncoder(codec, dataset.train, hflip)
    if cfg.data.latent_store and codec.stochastic:  # ImageNet scale: only this run's classes, shared by runs
        from rdistill.generate.latent_store import open_latents, store_classes

        base, base_classes = store_classes(cfg.data, dataset)
        return open_latents(cfg.data.latent_store, base, dataset.classes, base_classes, dataset.train, codec, hflip)
    return load_or_encode(run_dir / "latents", codec, dataset.train, hflip=hflip, batch_size=64,
                          progress=progress, dataset_name=cfg.data.name)


def build_model(cfg: RunConfig, dataset: Dataset, z_shape, run_dir: Path | None = None):
    """The DiT to train and the run's model.json: base weights (or a fresh init), then the method's PEFT.
    A base stored at a URI is read from this node's copy and recorded by its URI."""
    from rdistill import storage

    C, H, _ = z_shape
    run_dir = cfg.out if run_dir is None else run_dir
    base = storage.local_copy(cfg.model.init) if cfg.model.init else None
    if cfg.train.method == "pretrain":
        if cfg.model.init:
            dit = load_base(base, cfg.model.preset)
        else:
            dit = init_dit_(build_dit(cfg.model.preset, H, C, cfg.model.num_classes or dataset.num_classes), cfg.train.seed)
        for p in dit.parameters():
            p.requires_grad_(True)
        peft = "full"
    else:
        if not cfg.model.init:
            raise ValueError(f"train.method={cfg.train.method} fine-tunes a base model: set model.init (--init)")
        if not Path(base).exists():
            raise FileNotFoundError(f"no base model at {cfg.model.init}: train one with `rdistill pretrain --out "
                                    f"{cfg.model.init}` or point model.init (--init) at one")
        pin = base_pin(base, run_dir)  # the exact base weights; a resumed run keeps its pin
        if storage.is_uri(cfg.model.init):
            pin = {**pin, "path": cfg.model.init}
        dit = apply_difffit(load_base(base, cfg.model.preset, pin=pin))
        peft = "difffit"
    check_fits(dit, dataset, z_shape)
    init = None if not cfg.model.init or peft != "difffit" else (
        cfg.model.init if storage.is_uri(cfg.model.init) else str(Path(cfg.model.init).resolve()))
    meta = ckpt_io.RunMeta(
        architecture=architecture(dit), init=init, peft=peft, dataset=dataset.name,
        classes=list(dataset.classes), model_labels=list(dataset.model_labels), codec=cfg.data.codec,
        latent_shape=list(z_shape), base=pin if peft == "difffit" else None,
    )
    return dit, meta


def check_fits(dit, dataset: Dataset, z_shape) -> None:
    c = dit.config
    if (c.in_channels, c.sample_size) != (z_shape[0], z_shape[1]):
        raise ValueError(f"the DiT takes {c.in_channels}x{c.sample_size}x{c.sample_size} latents but the data "
                         f"gives {'x'.join(map(str, z_shape))}; check data.image_size and data.codec")
    bad = [(name, y) for name, y in zip(dataset.classes, dataset.model_labels) if not 0 <= y < num_classes_of(dit)]
    if bad:
        raise ValueError(f"classes {bad[:3]} have labels outside the model's {num_classes_of(dit)} classes")


def resume_or_start(cfg, run_dir: Path, meta, dit, opt, ema, memory, device, rank: int) -> int:
    """Load the newest checkpoint of `run_dir` (refusing another run's folder), or start one: step."""
    latest = ckpt_io.latest_checkpoint(run_dir)
    if latest is None:
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            meta.save(run_dir)
        return 0
    check_same_run(cfg, read_config(run_dir / "config.yaml"), run_dir)
    state = ckpt_io.load_checkpoint(latest, device)
    load_named(dit, state["trainable"])
    opt.load_state_dict(state["optimizer"])
    for k, v in state["ema"].items():
        ema[k].copy_(v)
    own = ckpt_io.load_rank_memory(latest, rank) if rank else None
    if rank and own is None:
        warnings.warn(f"{latest} holds no memories of rank {rank} (an older checkpoint): it resumes with rank 0's")
    memory.load_state_dict(own if own is not None else state["memory"])
    if rank == 0:
        save_config(cfg, run_dir / "config.yaml")
    return state["state"]["step"]


def check_same_run(cfg: RunConfig, saved: RunConfig, run_dir: Path) -> None:
    a, b = to_dict(cfg), to_dict(saved)
    a.pop("out"), b.pop("out")  # a run folder may be moved or copied
    for key in RESUME_FREE_KEYS:
        a["train"].pop(key), b["train"].pop(key)
    if a != b:
        diff = [f"{s}.{k}: {b[s][k]!r} -> {a[s][k]!r}" for s in ("data", "model", "train")
                for k in a[s] if a[s][k] != b[s][k]]
        raise ValueError(f"{run_dir} holds a run with another config ({'; '.join(diff)}); "
                         "choose another --out or delete the folder")
