"""The study's generators: the base (pretrained unless it exists) and each method's fine-tuning run."""

from __future__ import annotations

import time
from dataclasses import replace

from rdistill import storage
from rdistill.common.devices import resolve_device
from rdistill.config import RunConfig, load_config
from rdistill.study.settings import GENERATED, StudySettings, add_minutes


def finetune_config(s: StudySettings, method: str) -> RunConfig:
    """The fine-tuning run of `method`: Difffit from the base on the target, the carve withheld."""
    keys = [f"data.name={s.target}", f"data.holdout={s.val_fraction}", f"model.preset={s.base.model.preset}",
            f"model.init={s.base.out}", *s.finetune[method], f"out={storage.join(s.out, 'runs', method)}"]
    return load_config(None, keys)


def train_all(s: StudySettings, progress: bool, address: str | None = None) -> dict[str, str]:
    """The base (pretrained unless it exists), then every fine-tuned run: method -> run location.

    Runs in a folder train `s.workers` at a time as Ray tasks (one core each, or one GPU where the runs train on
    CUDA; workers 0: here, one after another); runs in storage train on Ray Train, one after another."""
    from rdistill.generate.checkpoint import latest_checkpoint

    runs = {GENERATED: train_base(s, progress)}
    configs = {m: finetune_config(s, m) for m in s.finetune}
    for method, cfg in configs.items():
        print(f"[study] {'checking' if latest_checkpoint(cfg.out) else 'training'} {method} in {cfg.out}")
    if s.workers == 0 or storage.is_uri(s.out) or len(configs) < 2:
        trained = [train_timed(cfg, progress) for cfg in configs.values()]
    else:
        from rdistill.distributed.tasks import run_calls

        gpu = any(resolve_device(cfg.train.device).type == "cuda" for cfg in configs.values())
        calls = [((cfg, False), {}) for cfg in configs.values()]  # no bars from tasks
        trained = run_calls(train_timed, calls, workers=s.workers, address=address, use_gpu=gpu)
    for method, (location, minutes) in zip(configs, trained):
        add_minutes(s, f"train {method}", minutes)
        runs[method] = location
    return runs


def train_base(s: StudySettings, progress: bool) -> str:
    """The base's location: pretrained here unless it exists; a published base (its EMA only) is used as it is."""
    from rdistill.generate.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(s.base.out)  # a folder, or this node's copy of a run published to storage
    if ckpt is not None and not (ckpt / "optimizer.pt").exists():
        print(f"[study] base: {s.base.out} (published: its EMA only, used as it is)")  # experiments/bases/
        return s.base.out
    print(f"[study] {'training' if ckpt is None else 'checking'} {GENERATED} in {s.base.out}")
    location, minutes = train_timed(s.base, progress)
    add_minutes(s, f"train {GENERATED}", minutes)
    return location


def train_timed(cfg: RunConfig, progress: bool) -> tuple[str, float]:
    """train_run, and the minutes it took."""
    start = time.perf_counter()
    location = train_run(cfg, progress)
    return location, (time.perf_counter() - start) / 60


def train_run(cfg: RunConfig, progress: bool) -> str:
    """Train (or complete) one run: in this process into a folder; on Ray Train (one worker, published at the end)
    into storage, where no node's disk holds it."""
    if storage.is_uri(cfg.out):
        from rdistill.distributed.train_ray import fit_ray

        result = fit_ray(cfg, num_workers=1, name="train", progress=progress)
        if result.error is not None:
            raise result.error
        return cfg.out
    from rdistill.generate.finetune import train

    return str(train(cfg, progress=progress))


def stored_base(s: StudySettings) -> StudySettings:
    """For a study in storage, a base that only this node's disk holds (experiments/bases/) is published under
    <out>/base first, so that workers on every node read the same one."""
    from rdistill.generate.checkpoint import latest_checkpoint

    if not storage.is_uri(s.out) or storage.is_uri(s.base.out) or latest_checkpoint(s.base.out) is None:
        return s
    location = storage.join(s.out, "base")
    if not storage.is_complete(location):
        print(f"[study] publishing the base {s.base.out} to {location}")
        storage.upload_dir(s.base.out, location)
    return replace(s, base=replace(s.base, out=location))
