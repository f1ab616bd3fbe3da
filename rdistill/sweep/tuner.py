"""The Fig. 6 sweep: Ray Tune + Optuna over epochs, lambda_r, lambda_d and N_M, tracked in MLflow.

    outcome = run_sweep(SweepSettings(out="runs/sweep", base=cfg, trials=8))   # resume=True completes one
    outcome = run_sweep(SweepSettings(out="s3://bucket/sweep", tracking="http://head:5000", ...))

The tuner: Optuna (the paper's point first), optional ASHA, trials started as `max_concurrent` says, each
trial a rdistill.sweep.trial, logged by rdistill.sweep.tracking; then rdistill.sweep.report tests the best
configuration and the paper's on the real test split. Tune's state and every trial's files live at the
sweep's location (a folder, or a storage URI given to Tune as storage_path + storage_filesystem). Runs carry
no timestamps, so Tuner.restore completes an interrupted sweep.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from rdistill.config import RunConfig
from rdistill.sweep.settings import METRIC, PAPER_POINT, SweepOutcome, SweepSettings
from rdistill.sweep.trial import trial


def max_concurrent(settings: SweepSettings) -> int:
    """Trials started at once (Optuna suggests that many ahead). With GPUs declared: every trial of the budget
    (or --max-concurrent), and placement decides how many train at once: each trial's Train workers wait for
    their GPUs, which an autoscaler sees and scales GPU nodes up for; nothing is read from the cluster. On
    CPUs: the trials the cluster's CPUs hold (more would only queue their workers behind each other)."""
    from rdistill.distributed.cluster import resources
    from rdistill.distributed.train_ray import CPUS_PER_WORKER

    if settings.gpus:
        return min(settings.max_concurrent or settings.trials, settings.trials)
    cpus = resources().cpus
    fit = int(cpus // (settings.num_workers * CPUS_PER_WORKER))
    if fit < 1:
        raise ValueError(f"one trial needs {settings.num_workers} workers of {CPUS_PER_WORKER} CPU but the "
                         f"cluster has {cpus:g} CPUs; use fewer workers")
    return min(settings.max_concurrent or fit, fit, settings.trials)


def tune_storage(settings: SweepSettings):
    """(storage_path, storage_filesystem) of Tune's state: the sweep's folder, or its URI's path and filesystem."""
    from rdistill import storage

    if storage.is_uri(settings.out):
        filesystem, path = storage.resolve(settings.out)
        return path, filesystem
    return str(Path(settings.out).resolve()), None


def build_tuner(settings: SweepSettings, trial_fn=trial):
    """A fresh Tuner: Optuna (the paper's point first), optional ASHA, MLflow logging, no timestamps."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from rdistill.sweep.tracking import MlflowTrials

    points = [PAPER_POINT] if settings.space.contains(PAPER_POINT) else []
    path, filesystem = tune_storage(settings)
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=settings.space.epochs[1], grace_period=1, reduction_factor=2)
                 if settings.asha else FIFOScheduler())
    return tune.Tuner(
        trainable(settings, trial_fn),
        param_space=settings.space.param_space(),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=settings.trials,
                                    search_alg=OptunaSearch(points_to_evaluate=points, seed=settings.seed),
                                    scheduler=scheduler, max_concurrent_trials=max_concurrent(settings)),
        run_config=tune.RunConfig(name=settings.name, storage_path=path, storage_filesystem=filesystem,
                                  callbacks=[MlflowTrials(settings)], verbose=1),
    )


def trainable(settings: SweepSettings, trial_fn=trial):
    """The trial function with its settings, reserving almost nothing: its Train workers hold the resources."""
    return tune.with_resources(tune.with_parameters(trial_fn, settings=settings), {"cpu": 0.01})


def open_tuner(settings: SweepSettings, resume: bool, trial_fn=trial):
    """A new Tuner, or (resume) the interrupted sweep of settings.out restored with its errored trials."""
    path = check_resume(settings, resume)
    if resume:
        return tune.Tuner.restore(path, trainable(settings, trial_fn), resume_errored=True,
                                  storage_filesystem=tune_storage(settings)[1])
    return build_tuner(settings, trial_fn)


def check_resume(settings: SweepSettings, resume: bool) -> str:
    """The sweep's Tune state (<out>/<name>): it must hold a sweep to resume, and none to start afresh."""
    import posixpath

    from rdistill import storage

    root, filesystem = tune_storage(settings)
    path = posixpath.join(root, settings.name) if filesystem else str(Path(root) / settings.name)
    exists = tune.Tuner.can_restore(path, storage_filesystem=filesystem)
    where = storage.join(settings.out, settings.name)
    if resume and not exists:
        raise FileNotFoundError(f"no sweep to resume in {where}; run it without --resume first")
    if not resume and exists:
        raise ValueError(f"{where} holds a sweep already: pass --resume to complete it, or choose another --out")
    return path


def preflight(settings: SweepSettings, address: str | None = None, resume: bool | None = None) -> int:
    """Every check that needs no work (ranges, budget, resume state, storage, MLflow, Ray address, a node for
    the declared GPUs within settings.resource_wait); returns the number of trials started at once."""
    from rdistill import storage
    from rdistill.distributed.cluster import connect, wait_for_resources
    from rdistill.distributed.train_ray import CPUS_PER_WORKER

    settings.check()
    if storage.is_uri(settings.out):
        storage.check_writable(settings.out)  # unreachable, or no write access: an error before any work
    _ = settings.tracking_uri  # a sweep in storage without an MLflow server raises ValueError here
    if resume is not None:
        check_resume(settings, resume)
    connect(address)
    if settings.gpus:
        try:
            wait_for_resources({"CPU": CPUS_PER_WORKER, "GPU": settings.gpus, **(settings.worker_resources or {})},
                               timeout=settings.resource_wait,
                               poll=min(1.0, settings.resource_wait / 4))
        except ValueError as e:
            raise ValueError(f"GPUs were requested (--gpu) but {e}") from None
    return max_concurrent(settings)


def run_sweep(settings: SweepSettings, *, resume: bool = False, address: str | None = None,
              trial_fn=trial, report: bool = True) -> SweepOutcome:
    """Run (or complete) the sweep, then plot it and test the best configuration and the paper's."""
    from rdistill import storage

    preflight(settings, address)
    init = settings.base.model.init
    if not (storage.is_complete(init) if storage.is_uri(init) else Path(init).exists()):
        raise FileNotFoundError(f"base model {init} does not exist" + (" (or is not a finished run folder in "
                                                                      "storage)" if storage.is_uri(init) else ""))
    if not storage.is_uri(settings.out):
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


def ensure_base(cfg: RunConfig) -> str:
    """Pretrain the base model cfg describes into cfg.out, resuming or reusing what is there: in this process
    for a folder, on Ray Train (one worker, published to storage) for a storage URI."""
    from rdistill import storage
    from rdistill.distributed.cluster import limit_threads

    print(f"pretraining (or checking) the base model in {cfg.out}; later sweeps reuse it")
    if storage.is_uri(cfg.out):
        from rdistill.distributed.train_ray import fit_ray

        result = fit_ray(cfg, num_workers=1, name="pretrain", progress=True)
        if result.error is not None:
            raise result.error
        return cfg.out
    from rdistill.generate.finetune import train

    limit_threads(1)  # beside a running Ray on a small machine, more threads thrash (STACK.md)
    return str(train(cfg, progress=True))
