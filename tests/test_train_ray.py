"""Fine-tuning on Ray Train: every rank reports at the same steps; a checkpoint carries what a node needs;
2 CPU workers (DDP on gloo) survive a worker's death by resuming from the last checkpoint."""

import os
import shutil
from pathlib import Path

import pytest

from rdistill.generate.checkpoint import latest_checkpoint
from rdistill.config import load_config
from rdistill.generate.finetune import Callbacks, World, train
from rdistill.distributed.train_ray import Reporter, fit_ray, package, restore, step_of


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A base model: dit-tiny pretrained on digits for 3 steps."""
    out = tmp_path_factory.mktemp("base") / "digits"
    cfg = load_config(None, ["model.preset=dit-tiny", "train.method=pretrain", "train.max_steps=3",
                             "train.batch_size=16", f"out={out}"])
    return train(cfg, progress=False)


def finetune_cfg(base, out, **train_keys):
    keys = {"max_steps": 8, "log_every": 2, "ckpt_every": 4, **train_keys}
    return load_config(None, [f"model.init={base}", f"out={out}", *(f"train.{k}={v}" for k, v in keys.items())])


def test_every_rank_reports_at_the_same_steps(base, tmp_path, monkeypatch):
    reports = {0: [], 1: []}
    record = lambda self, step, ckpt=None: reports[self.rank].append((step, ckpt is not None))  # noqa: E731
    monkeypatch.setattr(Reporter, "report", record)
    for rank in (0, 1):  # one after the other, each from scratch
        cfg = finetune_cfg(base, tmp_path / f"rank{rank}", max_steps=7, ckpt_every=3)  # checkpoints at 3, 6, 7 (end)
        reporter = Reporter(rank, cfg, Callbacks())
        train(cfg, callbacks=reporter.callbacks(), world=World(rank, 2), progress=False)
        reporter.finish(Path(cfg.out))
    assert reports[0] == [(2, False), (3, True), (4, False), (6, True), (7, True)]
    assert reports[1] == reports[0]  # rank 1's checkpoint reports carry its own minimax memories


def test_a_packaged_checkpoint_restores_a_run_folder_that_resumes(base, tmp_path):
    from ray.train import Checkpoint

    cfg = finetune_cfg(base, tmp_path / "run", max_steps=4)
    train(cfg, progress=False)
    packed = package(latest_checkpoint(cfg.out), str(tmp_path / "packed"))  # what rank 0 reports at step 4
    shutil.rmtree(cfg.out)  # a fresh node: nothing of the run there
    restore(Checkpoint.from_directory(packed), Path(cfg.out))
    assert step_of(latest_checkpoint(cfg.out)) == 4 and (Path(cfg.out) / "config.yaml").exists()
    train(finetune_cfg(base, tmp_path / "run", max_steps=6), progress=False)
    rows = (Path(cfg.out) / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [2, 4, 6]  # continued from step 4


def test_restore_keeps_a_newer_local_checkpoint(base, tmp_path):
    from ray.train import Checkpoint

    cfg = finetune_cfg(base, tmp_path / "run", max_steps=8)
    train(cfg, progress=False)  # checkpoints at 4 and 8
    packed = package(sorted((Path(cfg.out) / "checkpoints").glob("step-*"))[0], str(tmp_path / "packed"))
    restore(Checkpoint.from_directory(packed), Path(cfg.out))  # the step-4 checkpoint Ray knows of
    assert step_of(latest_checkpoint(cfg.out)) == 8


def test_restore_into_scratch_drops_checkpoints_ray_does_not_know(base, tmp_path):
    from ray.train import Checkpoint

    cfg = finetune_cfg(base, tmp_path / "run", max_steps=8)
    train(cfg, progress=False)  # checkpoints at 4 and 8
    packed = package(sorted((Path(cfg.out) / "checkpoints").glob("step-*"))[0], str(tmp_path / "packed"))
    restore(Checkpoint.from_directory(packed), Path(cfg.out), size=2)  # rank 1 has no memories at step 8
    assert step_of(latest_checkpoint(cfg.out)) == 4
    train(cfg, progress=False)  # checkpoints 4 and 8 again
    restore(Checkpoint.from_directory(packed), Path(cfg.out), scratch=True)  # a node's cache of a stored run
    assert step_of(latest_checkpoint(cfg.out)) == 4


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a cluster that runs here
    yield ray
    ray.shutdown()


@pytest.mark.ray
class TestOnRay:
    def test_two_cpu_workers_resume_from_the_last_checkpoint_after_a_worker_dies(self, local_ray, base, tmp_path):
        marker, seen = tmp_path / "killed", tmp_path / "logged"

        def on_log(step, metrics):  # rank 0 only
            with open(seen, "a") as f:
                f.write(f"{step}\n")

        def should_stop(step):
            import ray.train

            if step == 5 and ray.train.get_context().get_world_rank() == 1 and not marker.exists():
                marker.write_text("")
                os._exit(1)  # the worker process dies between the checkpoints at 4 and 8
            return False

        cfg = finetune_cfg(base, tmp_path / "run")
        result = fit_ray(cfg, num_workers=2, max_failures=1, hooks=Callbacks(on_log=on_log, should_stop=should_stop))
        assert marker.exists() and result.error is None
        assert seen.read_text().split() == ["2", "4", "6", "8"]  # steps 1-4 were not trained twice
        assert result.metrics["step"] == 8 and "loss_total" in result.metrics
        assert step_of(latest_checkpoint(Path(result.checkpoint.path))) == 8

    def test_bad_scaling_is_refused_before_any_work(self, local_ray, base, tmp_path):
        with pytest.raises(ValueError, match="GPUs were requested"):
            fit_ray(finetune_cfg(base, tmp_path / "a"), use_gpu=True, wait=1)
        with pytest.raises(ValueError, match="batch_size 8 < 9 workers"):
            fit_ray(finetune_cfg(base, tmp_path / "b"), num_workers=9)
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
