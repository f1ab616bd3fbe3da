"""The Fig. 6 sweep: Ray Tune + Optuna over epochs, lambda_r, lambda_d and N_M, tracked in MLflow.

    outcome = run_sweep(SweepSettings(out="runs/sweep", base=cfg, trials=8))   # resume=True completes one

The tuner: Optuna (the paper's point first), optional ASHA, as many trials at once as the cluster holds,
each trial a rdistill.sweep.trial, logged by rdistill.sweep.tracking; then rdistill.sweep.report tests the
best configuration and the paper's on the real test split. Runs carry no timestamps, so Tuner.restore
completes an interrupted sweep.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from rdistill.config import RunConfig
from rdistill.sweep.settings import METRIC, PAPER_POINT, SweepOutcome, SweepSettings
from rdistill.sweep.trial import trial

def max_concurrent(settings: SweepSettings) -> int:
    """Trials that fit at once: the cluster's GPUs (or CPUs) over what one trial's workers take."""
    from rdistill.distributed.cluster import resources
    from rdistill.distributed.train_ray import CPUS_PER_WORKER, scaling_uses_gpu

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

    from rdistill.sweep.tracking import MlflowTrials

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
    from rdistill.distributed.cluster import connect

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
    from rdistill.sweep.report import trial_rows

    rows, failed = trial_rows(results), sum(r.error is not None for r in results)
    outcome = SweepOutcome(trials=len(rows), failed=failed)
    if failed:
        print(f"{failed} of {len(results)} trials failed (errors under {results.experiment_path}); "
              "`--resume` retries them")
    if report and rows and not failed:
        from rdistill.sweep.report import final_report

        final_report(settings, rows, outcome)
    return outcome


def ensure_base(cfg: RunConfig) -> Path:
    """Pretrain the base model cfg describes into cfg.out (in this process), resuming or reusing what is there."""
    from rdistill.generate.checkpoint import latest_checkpoint
    from rdistill.distributed.cluster import limit_threads
    from rdistill.generate.finetune import train

    limit_threads(1)  # beside a running Ray on a small machine, more threads thrash (STACK.md)
    verb = "pretraining" if latest_checkpoint(cfg.out) is None else "checking (and completing) the"
    print(f"{verb} base model in {cfg.out}; later sweeps reuse it")
    return train(cfg, progress=True)
