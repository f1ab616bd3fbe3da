"""One trial of the sweep (the Tune function trainable): fine-tune the base with the trial's values on Ray
Train (rdistill.distributed.train_ray, a TorchTrainer nested in the trial, its losses forwarded to Tune as
they come), sample a surrogate set, train a student on it and test the student on a validation carve of
the TRAIN split (rdistill.data.validation). With ASHA the trial is validated at epoch rungs.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from rdistill.config import RunConfig
from rdistill.sweep.settings import METRIC, SweepSettings, trial_config, trial_dir

class LossReport(TuneReportCallback):
    """Forwards the fine-tuning reports to Tune, with val_acc NaN (not measured yet): Tune wants the metric
    in every result; ASHA skips results without its time attribute, the epoch of a validation."""

    def after_report(self, run_context, metrics, checkpoint):
        super().after_report(run_context, [{**m, METRIC: math.nan} for m in metrics], checkpoint)


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

    from rdistill import storage
    from rdistill.data import load_dataset
    from rdistill.distributed.train_ray import fit_ray, step_of
    from rdistill.generate.checkpoint import latest_checkpoint

    where = trial_dir(settings, tune.get_context().get_trial_id())
    cfg = trial_config(settings, config, storage.join(where, "finetune"))
    n = len(load_dataset(cfg.data.name, image_size=cfg.data.image_size, root=cfg.data.root).train)
    done = step_of(latest_checkpoint(cfg.out)) or 0  # a resumed trial: stages fine-tuned past were reported
    for epoch, step in stages(cfg, n // cfg.train.batch_size, settings.asha, asha_rungs(settings.space.epochs[1])):
        if step < done:
            continue
        fit_ray(replace(cfg, train=replace(cfg.train, max_steps=step)), num_workers=settings.num_workers,
                gpus_per_worker=settings.gpus, worker_resources=settings.worker_resources, name="finetune",
                storage_path=storage.join(where, "ray"), train_callbacks=[LossReport()], wait=settings.resource_wait)
        set_dir = storage.join(where, f"surrogate-epoch{epoch:02d}")
        acc = ray.get(evaluate_remote(settings, cfg.out, set_dir, "validation", [settings.seed],
                                      guidance=float(config["guidance"])))[0]
        tune.report({METRIC: acc["final_acc"], "val_best_acc": acc["best_acc"], "epoch": epoch, "step": step})


def evaluate(settings: SweepSettings, run_dir: str, set_dir: str, split: str, seed: int, guidance: float) -> dict:
    """Sample the run's surrogate set (in this process; kept, so a rerun skips it), train a student on it,
    test it on `split`: "validation" (the carve of the train split) or "test" (the real test split).
    `guidance` is the sampler's classifier-free guidance scale (an axis of the sweep)."""
    from rdistill.common.devices import release_gpu_memory, resolve_device
    from rdistill.data.validation import validation_split
    from rdistill.evaluate.cells import DataSpec, load_data, train_tensors
    from rdistill.evaluate.protocols import get_protocol
    from rdistill.evaluate.training import train_and_test
    from rdistill.generate.sampling import SampleJob, run_sampling

    try:
        run_sampling(SampleJob(run_dir=run_dir, out=set_dir, ipc=settings.ipc, seed=settings.seed,
                               steps=settings.sample_steps, guidance=guidance, workers=0), progress=False)
        protocol = get_protocol(settings.protocol, epochs=settings.student_epochs)
        spec = DataSpec(settings.base.data.name, settings.base.data.root, protocol.image_size)  # the protocol's size
        x, y = train_tensors(spec, set_dir, settings.ipc)  # (K * ipc, C, S, S), (K * ipc,)
        data = load_data(spec)
        held_out = validation_split(data, settings.val_fraction).test if split == "validation" else data.test
        r = train_and_test(settings.student or protocol.students[0], protocol, x, y,
                           held_out.images(range(len(held_out))), held_out.labels, num_classes=data.num_classes,
                           seed=seed, device=resolve_device("auto"))
        return {k: v for k, v in r.items() if k != "model"}  # metrics only: the student stays in the task
    finally:
        release_gpu_memory()  # Ray reuses this worker process for the next task


def evaluate_remote(settings: SweepSettings, run_dir, set_dir, split: str, seeds: list[int], *,
                    guidance: float) -> list:
    """`evaluate` as Ray tasks (one per seed; their refs), sized like a Train worker: its declared GPU, if any."""
    from rdistill.distributed.cluster import requested_options
    from rdistill.distributed.tasks import submit
    from rdistill.distributed.train_ray import CPUS_PER_WORKER

    opts = {**requested_options(settings.gpus, CPUS_PER_WORKER), "scheduling_strategy": "DEFAULT"}  # not in the trial's bundle
    if settings.worker_resources:
        opts["resources"] = dict(settings.worker_resources)
    return [submit(evaluate, settings, str(run_dir), str(set_dir), split, s, guidance, options=opts) for s in seeds]
