"""Generating a surrogate set: IPC images per class from a trained run, as Parquet shards (rdistill.data.shards).

    job = SampleJob(run_dir="runs/woof-minimax", out="sets/woof-ipc10", ipc=10, workers=2)
    manifest = run_sampling(job)

The work is a list of tasks, one per (class, chunk of `chunk_size` image indices); each task writes one
shard (`generate_chunk`, a plain function that runs the same with or without Ray). The driver only plans,
launches and records: images never pass through it, so its memory does not grow with IPC.

Determinism: image i of dataset class k draws its noise from `sampler.image_seed(seed, model_labels[k], i)`,
keyed on the MODEL label (a class keeps its noise across runs that sample other subsets of classes), so a
task gives the same shard on any worker, in any order, after any retry. Batches start at the chunk's first
index and are never padded: only kept images are computed (the chunk's last batch may be short). On the
CPU an image's bytes do not depend on its batch (rdistill.models.dit.fast_forward_), so IPC k is a prefix
of a larger IPC at any batch size (`read_surrogate(folder, ipc=k)`); on CUDA the same batch_size (recorded
in the manifest) gives the same bytes.

`run_dir` and `out` are storage locations (rdistill.storage: a local path, or a URI such as s3://...): a
worker reads the run from its node's scratch copy (`storage.local_copy`) and publishes each shard, and the
driver the manifest, to `out`; nothing is read from another node's disk.

Resuming: the manifest is saved before the first task and after every finished shard; a rerun skips the
shards whose file matches the manifest (rows and sha256) and rewrites the missing, partial or corrupt ones.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from rdistill import storage
from rdistill.common.files import remove_stale_temporaries
from rdistill.config import TrainConfig, read_config, to_dict
from rdistill.data.shards import Manifest, ShardInfo, check_overwrite, shard_is_complete, shard_name
from rdistill.distributed.tasks import run_calls
from rdistill.generate.checkpoint import RunMeta, latest_checkpoint, weights_hash
from rdistill.generate.diffusion import NUM_TRAIN_STEPS
from rdistill.generate.sampler import (DEFAULT_BATCH_SIZE, DEFAULT_GUIDANCE, DEFAULT_STEPS, DIT_GUIDED_CHANNELS, METHODS,
                                       PRECISIONS)

# The surrogate set's method name for each kind of training run (config train.method).
RUN_METHODS = {"pretrain": "dit", "difffit": "difffit", "minimax": "minimax"}


@dataclass(frozen=True)
class SampleJob:
    run_dir: str  # a training run folder (model.json, config.yaml, checkpoints/)
    out: str  # the surrogate-set folder
    ipc: int  # images per class
    seed: int = 0  # of every image's noise
    steps: int = DEFAULT_STEPS  # respaced sampling steps (SPEC.md section 3: 50)
    guidance: float = DEFAULT_GUIDANCE  # classifier-free guidance scale (SPEC.md section 3: 4.0)
    guidance_channels: int | None = DIT_GUIDED_CHANNELS  # eps channels guided; None = all (DiT: first 3)
    method: str = "ddpm"  # ddpm (the paper's) | ddim
    chunk_size: int = 50  # images per shard, i.e. per task
    batch_size: int = DEFAULT_BATCH_SIZE  # images per forward (CFG doubles the rows); a chunk's last batch may
    # be shorter: nothing is padded. Per image, batches 5-25 run alike on CPU (benchmarks/sampling_ipc.py)
    classes: tuple[str | int, ...] | None = None  # class names or dataset indices; None = all
    overwrite: bool = False  # replace a folder holding another set
    workers: int = 0  # Ray tasks in flight; 0 = run every task in this process
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast of the DiT's forward; the sampling chain stays float32)
    compile: bool = False  # torch.compile the DiT (worth it on a GPU; minutes of compiling on a CPU)


@dataclass(frozen=True)
class Task:
    label: int  # dataset class index
    chunk: int  # the chunk's number within its class
    indices: range  # image indices of the class


def check_job(job: SampleJob) -> None:
    """Values each field admits; ValueError naming the field and the value."""
    checks = [
        ("ipc", job.ipc >= 1, ">= 1"),
        ("steps", 1 <= job.steps <= NUM_TRAIN_STEPS, f"in [1, {NUM_TRAIN_STEPS}]"),
        ("guidance", job.guidance >= 0, ">= 0"),
        ("guidance_channels", job.guidance_channels is None or job.guidance_channels >= 1, ">= 1 or None (all)"),
        ("method", job.method in METHODS, f"one of {METHODS}"),
        ("precision", job.precision in PRECISIONS, f"one of {PRECISIONS}"),
        ("chunk_size", job.chunk_size >= 1, ">= 1"),
        ("batch_size", job.batch_size >= 1, ">= 1"),
        ("workers", job.workers >= 0, ">= 0 (0 = no Ray)"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name} = {getattr(job, name)!r} is invalid: expected {expected}")


def resolve_classes(requested: Sequence[str | int] | None, names: Sequence[str]) -> list[int]:
    """Dataset indices of the requested classes (a name, or an index as int or digit string); None = all.
    Names win over indices (digits' class "3" is its name). Unknown ones raise ValueError naming them."""
    if requested is None:
        return list(range(len(names)))
    out, unknown = [], []
    for c in requested:
        if str(c) in names:
            out.append(list(names).index(str(c)))
        elif str(c).isdigit() and int(c) < len(names):
            out.append(int(c))
        else:
            unknown.append(c)
    if unknown:
        raise ValueError(f"classes {unknown} are not in the model's {len(names)} classes: {list(names)}")
    return sorted(set(out))


def plan(job: SampleJob, meta: RunMeta) -> list[Task]:
    """Every (class, chunk) task of the job, class by class."""
    chunks = [range(s, min(s + job.chunk_size, job.ipc)) for s in range(0, job.ipc, job.chunk_size)]
    return [Task(k, c, r) for k in resolve_classes(job.classes, meta.classes) for c, r in enumerate(chunks)]


# One task:


@dataclass(frozen=True)
class SamplingModel:
    """What a worker needs to turn noise into images: the EMA model, the codec, the run's labels."""

    model: Callable  # model(x, t, y) -> out
    num_classes: int  # the model's label space; its null class is num_classes
    meta: RunMeta
    codec: object  # rdistill.models.codec.Codec
    source: str  # weights_hash of the checkpoint
    device: torch.device


_loaded: dict = {}  # the one SamplingModel of this process, by (run_dir, checkpoint, device, compile)


def load_sampling_model(run_dir: str, checkpoint: str, device: str, compile: bool = False) -> SamplingModel:
    """The run's newest EMA model and its codec (VAE on the same device), loaded once per process. Another
    run (or checkpoint) first drops the previous model and empties the CUDA cache: a Ray worker reused for
    the next task must not hold two DiTs and VAEs on its GPU."""
    key = (run_dir, checkpoint, device, compile)
    if key not in _loaded:
        clear_models()
        _loaded[key] = _load_sampling_model(*key)
    return _loaded[key]


def clear_models() -> None:
    """Drop this process's sampling model and return its GPU memory."""
    _loaded.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_sampling_model(run_dir: str, checkpoint: str, device: str, compile: bool = False) -> SamplingModel:
    from rdistill.common.devices import resolve_device
    from rdistill.models.codec import load_codec
    from rdistill.models.dit import num_classes_of
    from rdistill.models.loading import load_run
    from rdistill.models.dit import dit_callable

    dev = resolve_device(device)
    dit, meta = load_run(run_dir, weights="ema", device=dev)
    channels = meta.latent_shape[0] if meta.codec == "pixel" else 3  # the SD VAE takes RGB
    codec = load_codec(meta.codec, channels, device=dev)
    model = dit_callable(dit, compile=compile)
    return SamplingModel(model, num_classes_of(dit), meta, codec, weights_hash(Path(checkpoint)), dev)


def newest_checkpoint(run_dir) -> Path:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"run {run_dir} has no complete checkpoint under checkpoints/: train it first")
    return ckpt


def generate_chunk(job: SampleJob, task: Task, source: str | None = None) -> ShardInfo:
    """Sample, decode and PNG-encode the task's images and write its shard atomically.

    `source` (the driver's checkpoint hash) guards against a checkpoint that changed since planning."""
    from rdistill.generate.sampler import sample
    from rdistill.data.shards import shard_row, write_shard

    run_dir = storage.local_copy(job.run_dir)  # this node's copy of a run in storage
    g = load_sampling_model(run_dir, str(newest_checkpoint(run_dir)), job.device, job.compile)
    if source is not None and g.source != source:
        raise ValueError(f"run {run_dir} now holds checkpoint {g.source}, not {source}: rerun to sample the new one")
    name, y_model = g.meta.classes[task.label], g.meta.model_labels[task.label]
    rows = []
    for idx in torch.tensor(list(task.indices)).split(job.batch_size):  # batches start at the chunk's start
        y = torch.full_like(idx, y_model)  # (n,) model labels; n < batch_size only for the chunk's last batch
        z = sample(g.model, y, idx, seed=job.seed, shape=tuple(g.meta.latent_shape), num_classes=g.num_classes,
                   steps=job.steps, guidance=job.guidance, guidance_channels=job.guidance_channels,
                   method=job.method, precision=job.precision)  # (n, C, h, w); unpadded: bytes independent of n (CPU)
        x = g.codec.decode(z).cpu()  # (n, c, H, W) in [-1, 1]
        rows += [shard_row(img, task.label, name, job.seed, i, g.source) for img, i in zip(x, idx.tolist())]
    return write_shard(job.out, rows, shard_name(task.label, task.chunk), classes=g.meta.classes)


# The whole set:


def build_manifest(job: SampleJob, meta: RunMeta, ckpt: Path, run_dir: str | None = None) -> Manifest:
    """The set's manifest: what defines it (not the workers, not the class subset: a later run may add classes).
    `run_dir`: a local copy of job.run_dir (default: job.run_dir itself)."""
    run_cfg = read_config(Path(run_dir or job.run_dir) / "config.yaml")
    where = ("run_dir", "out", "classes", "overwrite", "workers", "device")  # not what the images are
    sampling = {k: v for k, v in asdict(job).items() if k not in where}
    config = {"sampling": sampling, "run": to_dict(run_cfg), "checkpoint": ckpt.name,
              "noise": "sampler.image_seed(seed, model label, index)",
              "batching": "unpadded batches of sampling.batch_size from each chunk's start"}
    if meta.base is not None:  # a fine-tuned run: the exact base weights under its trainable ones
        config["base"] = meta.base
    return Manifest(list(meta.classes), list(meta.model_labels), job.ipc, set_method(run_cfg),
                    weights_hash(ckpt), config=config)


def set_method(run_cfg) -> str:
    """The set's method name: the run's (dit, difffit, minimax), with what differs from the paper's criteria
    marked: their forms (the Table 5 ablations), the weights of those on and centring, e.g. "minimax[r=mean,d=off]",
    "minimax[ld=0.04]", "minimax[centred]". Sets of different criteria never share a row of a matrix."""
    t, paper, name = run_cfg.train, TrainConfig(), RUN_METHODS[run_cfg.train.method]
    if name != "minimax":
        return name
    changed = [f"{k}={v}" for k, v in {"r": t.representativeness, "d": t.diversity}.items() if v != "minimax"]
    weights = {"lr": ("lambda_r", t.representativeness != "off"), "ld": ("lambda_d", t.diversity != "off"),
               "nm": ("memory_size", t.representativeness == "minimax" or t.diversity != "off")}  # what reads N_M
    changed += [f"{k}={getattr(t, f):g}" for k, (f, on) in weights.items() if on and getattr(t, f) != getattr(paper, f)]
    changed += ["centred"] if t.centred and (t.representativeness != "off" or t.diversity != "off") else []
    return f"{name}[{','.join(changed)}]" if changed else name


def is_written(task: Task, manifest: Manifest, out) -> bool:
    """Whether the task's shard is on disk as the manifest records it (rows and sha256)."""
    name = shard_name(task.label, task.chunk)
    s = manifest.shards.get(name)
    return s is not None and shard_is_complete(out, name, s["rows"], s["sha256"])


def run_sampling(job: SampleJob, progress: bool = True, *, chunk_fn: Callable = generate_chunk,
                 options: dict | None = None) -> Manifest:
    """Generate the job's surrogate set in job.out, resuming a partial one; returns its manifest.
    `options`: what each Ray task asks (commands.ray_args.task_request: CPUs, declared GPUs, resources).

    `chunk_fn(job, task, source) -> ShardInfo` runs one task (tests inject worker deaths through it)."""
    # Checks, before any work:
    check_job(job)
    where = lambda p: p if storage.is_uri(p) else str(Path(p).resolve())  # noqa: E731  (workers: another folder)
    job = replace(job, run_dir=where(job.run_dir), out=where(job.out))
    run_local = storage.local_copy(job.run_dir)
    meta = RunMeta.load(run_local)
    ckpt = newest_checkpoint(run_local)
    tasks = plan(job, meta)  # raises on unknown classes
    fresh = build_manifest(job, meta, ckpt, run_local)
    manifest = check_overwrite(job.out, fresh.fingerprint(), job.overwrite) or fresh

    # Mark the folder as this set's, drop temporary files of killed writers, find what is missing:
    out = job.out
    if not storage.is_uri(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    manifest.save(out)
    todo = [t for t in tasks if not is_written(t, manifest, out)]  # missing, partial or corrupt

    # Run the missing tasks, recording each shard as it lands:
    total = sum(len(t.indices) for t in tasks)
    bar = tqdm(total=total, initial=total - sum(len(t.indices) for t in todo), unit="img",
               desc=f"sampling {manifest.method} ipc {job.ipc}", disable=not progress)

    def record(task: Task, info: ShardInfo) -> None:
        manifest.record(info, task.label, task.chunk)
        manifest.save(out)
        bar.update(info.rows)

    with bar:
        calls = [((job, task, manifest.source), {}) for task in todo]
        run_calls(chunk_fn, calls, workers=job.workers, on_result=lambda i, info: record(todo[i], info),
                  options=options)
    return manifest
