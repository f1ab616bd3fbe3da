"""Fine-tuning on Ray Train: `fit_ray(cfg)` runs rdistill.generate.finetune.train in every worker of a TorchTrainer.

    result = fit_ray(cfg, num_workers=2)   # DDP (gloo on CPU, NCCL on GPUs); result.checkpoint, result.metrics

- Scaling: the GPUs each worker declares (`gpus_per_worker`, or the config's cuda device), else
  `cpus_per_worker` CPUs per worker; torch threads per worker = its CPU share. With N workers each rank trains on global_batch[rank::N], so the
  global batch (and with it the paper's batch 8) is preserved; the minimax memories stay per worker, as
  in the reference (each rank remembers the latents and predictions of its own slice), and every rank's
  memories go into the checkpoint, so a restarted rank resumes with its own.
- Reports: every rank calls ray.train.report at the same steps (every `log_every` steps, every
  checkpoint, and once at the end); rank 0's report carries the losses of that step, and at a checkpoint
  the checkpoint (the run files plus the checkpoint folder the loop wrote, see `package`).
- Failures: FailureConfig(max_failures) restarts the workers, and the loop resumes from the newest
  checkpoint. Each node first copies in ray.train.get_checkpoint() when it is newer than what the node
  holds (`restore`); a run stored at a URI lives in each node's scratch, never on another node's disk.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from rdistill.generate import checkpoint as ckpt_io
from rdistill.config import RunConfig, from_dict, to_dict
from rdistill.distributed.train_checkpoints import (package, package_memory, publish,  # noqa: F401
                                                    restore, restore_published, step_of)
from rdistill.generate.finetune import Callbacks, World

CPUS_PER_WORKER = 0.9  # STACK.md: 2 workers (or 2 trials) and a 0.01-CPU Tune driver fit on 2 CPUs


def fit_ray(cfg: RunConfig, *, num_workers: int = 1, use_gpu: bool | None = None, gpus_per_worker: float | None = None,
            cpus_per_worker: float = CPUS_PER_WORKER, worker_resources: dict | None = None, max_failures: int = 2,
            name: str = "train", storage_path: str | None = None, hooks: Callbacks | None = None,
            train_callbacks: list = (), progress: bool = False, wait: float = 600.0):
    """Train (or resume) the run cfg.out on Ray Train; returns the ray.train.Result.

    `hooks` are extra loop callbacks run in every worker (picklable; `should_stop` must answer the same
    on every rank). `train_callbacks` go to the Train RunConfig (e.g. Tune's TuneReportCallback).
    Ray Train's own records go to storage_path/name (default: <cfg.out>/ray/<name>), a local folder or a
    storage URI (rdistill.storage: given to Ray as storage_path + storage_filesystem); rerunning with the
    same name continues that record. A run stored at a URI trains in each node's scratch and is published
    to cfg.out from the Result's checkpoint at the end (`publish`).
    GPUs are declared: `gpus_per_worker` (or use_gpu=True: 1; default: 1 when cfg.train.device is cuda,
    else 0), never read from the cluster's totals; a request no node can hold fails after `wait` seconds.
    `worker_resources` adds custom resources per worker (e.g. {"n2": 0.5} to place workers on a node type).
    Bad scaling input raises ValueError before any work starts.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from rdistill import storage
    from rdistill.distributed.cluster import connect, wait_for_resources

    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if cfg.train.batch_size < num_workers:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} < {num_workers} workers: a rank would get an "
                         "empty slice of the global batch; use fewer workers")
    if not 0 < cpus_per_worker:
        raise ValueError(f"cpus_per_worker must be > 0 (Ray refuses 0-CPU requests), got {cpus_per_worker}")
    connect()
    gpus = declared_gpus(cfg, use_gpu, gpus_per_worker)
    cfg = absolute_paths(cfg)
    per_worker = {"CPU": cpus_per_worker, **({"GPU": gpus} if gpus else {}), **(worker_resources or {})}
    try:
        wait_for_resources(per_worker, timeout=wait, poll=min(1.0, wait / 4))
    except ValueError as e:
        raise ValueError(f"GPUs were requested ({gpus} per worker) but {e}" if gpus else str(e)) from None
    location = storage_path or storage.join(cfg.out, "ray")
    if storage.is_uri(location):
        storage.check_writable(location)
    filesystem, path = storage.resolve(location)
    loop_config = {"cfg": to_dict(cfg), "hooks": hooks, "cpus": cpus_per_worker, "gpu": bool(gpus),
                   "progress": progress}
    make_trainer = lambda: TorchTrainer(  # noqa: E731
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=bool(gpus),
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=filesystem if storage.is_uri(location) else None,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(train_callbacks),
        ),
    )
    result = fit_resuming(make_trainer, max_failures)
    if storage.is_uri(cfg.out) and result.checkpoint is not None:
        publish(result.checkpoint, cfg.out)
    return result


def fit_resuming(make_trainer, retries: int):
    """trainer.fit(); when Ray Train's controller itself fails because a worker died while the worker group was
    being restarted (Ray 2.60 raises that as a non-retryable ControllerError), fit again: the same run name
    and storage resume from the run's stored checkpoints."""
    import warnings

    import ray.exceptions
    import ray.train

    for attempt in range(retries + 1):
        try:
            return make_trainer().fit()
        except ray.train.ControllerError as e:
            died = isinstance(getattr(e, "controller_failure", None), ray.exceptions.ActorDiedError)
            if not died or attempt == retries:
                raise
            warnings.warn(f"Ray Train's controller failed as a worker died during a restart; fitting again from "
                          f"the run's stored checkpoints ({attempt + 1} of {retries})")


def declared_gpus(cfg: RunConfig, use_gpu: bool | None, gpus_per_worker: float | None) -> float:
    """GPUs per worker as declared (flag, use_gpu, or the config's cuda device), never guessed from the cluster."""
    if gpus_per_worker is not None:
        if gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        return float(gpus_per_worker)
    if use_gpu is not None:
        return 1.0 if use_gpu else 0.0
    return 1.0 if cfg.train.device.startswith("cuda") else 0.0


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """cfg with out, model.init and data.root absolute: Ray workers do not run in the driver's folder.
    Storage URIs stay as they are."""
    from rdistill import storage

    absolute = lambda p: str(Path(p).resolve()) if p is not None and Path(p).exists() else p  # noqa: E731
    out = cfg.out if storage.is_uri(cfg.out) else str(Path(cfg.out).resolve())
    init = cfg.model.init if cfg.model.init and storage.is_uri(cfg.model.init) else absolute(cfg.model.init)
    return replace(cfg, out=out, model=replace(cfg.model, init=init), data=replace(cfg.data, root=absolute(cfg.data.root)))


def local_run_dir(cfg: RunConfig) -> Path:
    """Where a worker keeps the run: cfg.out itself when local, else this node's scratch copy of it."""
    from rdistill import storage

    return Path(storage.scratch_for(cfg.out, "runs")) if storage.is_uri(cfg.out) else Path(cfg.out)


# --- In each worker ---------------------------------------------------------------------------------


def train_worker(config: dict) -> None:
    """Ray Train's train_loop_per_worker: restore, run rdistill.generate.finetune.train, report the end."""
    import ray.train
    import torch

    from rdistill import storage
    from rdistill.common.devices import release_gpu_memory
    from rdistill.distributed.cluster import limit_threads
    from rdistill.generate.finetune import train

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    limit_threads(config["cpus"])
    if config["gpu"]:
        torch.cuda.set_device(ray.train.torch.get_device())  # "auto"/"cuda" then means this worker's GPU
    cfg = from_dict(config["cfg"])
    run_dir = local_run_dir(cfg)

    # Setup the run folder of this node (one writer per node), then start together:
    if ctx.get_local_rank() == 0:
        restore(ray.train.get_checkpoint(), run_dir, size, scratch=storage.is_uri(cfg.out))
        if ray.train.get_checkpoint() is None:
            restore_published(cfg.out, run_dir)
        if size > 1:
            encode_latents(cfg, run_dir)  # once, before the ranks would all write the same cache
    if size > 1:
        torch.distributed.barrier()

    # Train, reporting at the same steps on every rank:
    reporter = Reporter(rank, cfg, config["hooks"] or Callbacks())
    wrap = (lambda m: ray.train.torch.prepare_model(m, move_to_device=False)) if size > 1 else (lambda m: m)
    try:
        train(cfg, callbacks=reporter.callbacks(), world=World(rank, size, wrap), progress=config["progress"],
              run_dir=run_dir)
        reporter.finish(run_dir)
    finally:
        release_gpu_memory()  # a reused worker process must not keep this run's tensors on its GPU


class Reporter:
    """Turns the loop's callbacks into ray.train.report calls that every rank makes at the same steps.

    The loop calls on_log (rank 0, log steps), then should_stop (every rank, every step), then saves a
    checkpoint (rank 0: the checkpoint folder; other ranks: their own minimax memories) and calls
    on_checkpoint (every rank) when step % ckpt_every == 0, at a stop, or at the last step. A checkpoint
    step is reported by every rank from on_checkpoint, each with its files (Ray Train merges them into one
    checkpoint); another log step by every rank from should_stop; the last step, if no checkpoint report
    covered it, by `finish` after the loop.
    """

    def __init__(self, rank: int, cfg: RunConfig, hooks: Callbacks):
        self.rank, self.t, self.hooks = rank, cfg.train, hooks
        self.metrics: dict = {}  # losses of the last logged step
        self.last_step: int | None = None
        self.stopped = False

    def callbacks(self) -> Callbacks:
        return Callbacks(on_log=self.on_log, on_checkpoint=self.on_checkpoint, should_stop=self.should_stop)

    def checkpoints_at(self, step: int) -> bool:
        return step % self.t.ckpt_every == 0 or self.stopped

    def on_log(self, step: int, metrics: dict) -> None:
        self.metrics = dict(metrics)
        if self.hooks.on_log:
            self.hooks.on_log(step, metrics)

    def should_stop(self, step: int) -> bool:
        self.last_step = step
        self.stopped = bool(self.hooks.should_stop and self.hooks.should_stop(step))
        if not self.checkpoints_at(step) and step % self.t.log_every == 0:  # checkpoint steps: on_checkpoint
            self.report(step)
        return self.stopped

    def on_checkpoint(self, step: int, path: Path) -> None:
        if self.hooks.on_checkpoint and self.rank == 0:
            self.hooks.on_checkpoint(step, path)
        if self.checkpoints_at(step):
            self.report(step, path)

    def finish(self, run_dir: Path) -> None:
        """The final report (with the newest checkpoint) unless a checkpoint report covered the last step."""
        if self.last_step is None or not self.checkpoints_at(self.last_step):
            latest = ckpt_io.latest_checkpoint(run_dir)
            step = self.last_step if self.last_step is not None else step_of(latest)
            if self.rank != 0:  # this rank's memories of that checkpoint, if it saved them
                latest = ckpt_io.rank_memory_path(run_dir, step, self.rank) if step is not None else None
                latest = latest if latest is not None and latest.is_file() else None
            self.report(step, latest)

    def report(self, step: int | None, ckpt: Path | None = None) -> None:
        import ray.train

        metrics = {"step": step}
        if self.rank == 0 and self.metrics.get("step") == step:
            metrics.update(self.metrics)
        if ckpt is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = package(ckpt, tmp) if self.rank == 0 else package_memory(ckpt, step, self.rank, tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def encode_latents(cfg: RunConfig, run_dir: Path) -> None:
    """Fill the run's latent cache (the loop reuses it) so that concurrent ranks do not all write it."""
    from rdistill.data import load_dataset
    from rdistill.generate.finetune import latent_source

    dataset = load_dataset(cfg.data.name, image_size=cfg.data.image_size, root=cfg.data.root)
    hflip = dataset.hflip if cfg.data.hflip is None else cfg.data.hflip
    latent_source(cfg, dataset, hflip, run_dir, progress=False)
