"""The Fig. 6 sweep: its search space and checks, the smoke test end to end under a real Ray and MLflow
store, and an interrupted sweep that resumes with no trial lost or repeated."""

import importlib.util
import math
import time
from pathlib import Path

import pytest

from rdistill.config import load_config
from rdistill.distributed.cluster import check_address
from rdistill.sweep.settings import PAPER_POINT, Space, SweepSettings, trial_config
from rdistill.sweep.trial import asha_rungs, stages
from rdistill.sweep.tuner import open_tuner, preflight, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def settings(tmp_path, **kw) -> SweepSettings:
    base = load_config(None, [f"model.init={tmp_path / 'base'}", f"out={tmp_path / 'trials'}"])
    return SweepSettings(out=str(tmp_path / "sweep"), base=base, **kw)


# --- Search space and checks (no Ray) ----------------------------------------------------------------


@pytest.mark.parametrize("axis, bad", [("epochs", (9, 3)), ("lambda_r", (0.01, 0.001)), ("lambda_d", (0.03, 0.002)),
                                       ("memory_size", (1024, 16))])
def test_a_range_with_low_above_high_names_its_axis(axis, bad):
    with pytest.raises(ValueError, match=f"search range of {axis}: low .* > high"):
        Space(**{axis: bad}).check()


def test_other_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="trials = 0 is invalid"):
        settings(tmp_path, trials=0).check()
    with pytest.raises(ValueError, match="no power of 2"):
        Space(memory_size=(33, 60)).check()
    with pytest.raises(ValueError, match="lambda_r: low must be > 0"):
        Space(lambda_r=(0.0, 0.01)).check()


def test_the_default_space_is_fig6_and_holds_the_papers_point():
    space = Space()
    assert space.memory_sizes() == [16, 32, 64, 128, 256, 512, 1024]
    assert space.contains(PAPER_POINT)
    assert not Space(lambda_r=(0.003, 0.01)).contains(PAPER_POINT)
    fixed = Space(epochs=(8, 8), memory_size=(64, 64)).param_space()
    assert fixed["epochs"] == 8 and fixed["memory_size"] == 64  # an axis with low == high is a constant


def test_guidance_is_an_axis_with_the_papers_scale_first():
    space = Space()
    assert PAPER_POINT["guidance"] == 4.0 and space.guidance == (1.0, 6.0)
    assert not Space(guidance=(1.0, 3.0)).contains(PAPER_POINT)
    assert Space(guidance=(4.0, 4.0)).param_space()["guidance"] == 4.0
    assert Space(guidance=(0.0, 2.0)).check() is None  # below 1 mixes toward the unconditional output
    with pytest.raises(ValueError, match="guidance: low must be >= 0"):
        Space(guidance=(-1.0, 2.0)).check()


def test_a_trial_is_validated_at_the_end_or_at_each_asha_rung():
    cfg = load_config(None, ["train.epochs=5"])
    assert asha_rungs(12) == [1, 2, 4, 8]
    assert stages(cfg, 10, asha=False, rungs=[1, 2, 4, 8]) == [(5, 50)]
    assert stages(cfg, 10, asha=True, rungs=[1, 2, 4, 8]) == [(1, 10), (2, 20), (4, 40), (5, 50)]
    capped = load_config(None, ["train.epochs=5", "train.max_steps=15"])
    assert stages(capped, 10, asha=True, rungs=[1, 2, 4, 8]) == [(1, 10), (2, 15)]


def test_a_trial_config_is_the_base_with_the_trials_values(tmp_path):
    cfg = trial_config(settings(tmp_path), {"epochs": 3, "lambda_r": 0.004, "lambda_d": 0.02, "memory_size": 128},
                       tmp_path / "t")
    t = cfg.train
    assert (t.epochs, t.lambda_r, t.lambda_d, t.memory_size, cfg.out) == (3, 0.004, 0.02, 128, str(tmp_path / "t"))


def test_an_unreachable_address_is_an_error_at_once():
    tic = time.time()
    with pytest.raises(ValueError, match="cannot reach a Ray cluster at '127.0.0.1:1'"):
        check_address("127.0.0.1:1")
    with pytest.raises(ValueError, match="not host:port"):
        check_address("nowhere")
    assert time.time() - tic < 10


def load_script():
    spec = importlib.util.spec_from_file_location("sweep_lambdas", ROOT / "experiments" / "sweep_lambdas.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("flags, message", [(["--epochs", "9", "3"], "search range of epochs: low 9 > high 3"),
                                            (["--trials", "0"], "trials = 0 is invalid"),
                                            (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster")])
def test_the_script_refuses_bad_input_before_any_work(tmp_path, capsys, flags, message):
    assert load_script().main([*flags, "--out", str(tmp_path / "sweep")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "sweep").exists()


# --- Under a real local Ray ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a cluster that runs here
    yield ray
    ray.shutdown()


def mlflow_runs(out: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rdistill-sweep"])
    return runs[runs["tags.rdistill.role"] == "sweep"], runs[runs["tags.rdistill.trial_id"].notna()]


@pytest.mark.ray
def test_gpus_requested_where_none_exist_are_refused(local_ray, tmp_path):
    with pytest.raises(ValueError, match="GPUs were requested"):
        preflight(settings(tmp_path, use_gpu=True, resource_wait=1))


@pytest.mark.ray
def test_the_smoke_test_runs_end_to_end_into_mlflow(local_ray, tmp_path, capsys):
    assert load_script().main(["--smoke-test", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "paper default" in printed and f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in printed

    parent, trials = mlflow_runs(tmp_path)
    assert len(parent) == 1 and len(trials) == 2 and set(trials["status"]) == {"FINISHED"}
    assert trials["metrics.val_acc"].map(math.isfinite).all()
    first = trials[trials["params.train.memory_size"] == "64"]  # the paper's point is evaluated
    assert float(first["params.train.lambda_r"].iloc[0]) == 0.002
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    losses = client.get_metric_history(trials["run_id"].iloc[0], "loss_total")
    assert [m.step for m in losses] == [2, 4]  # the fine-tuning losses, by fine-tuning step
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"].iloc[0])}
    assert {"fig6-epochs.png", "fig6-lambda-r.png", "fig6-lambda-d.png", "fig6-memory-size.png",
            "fig6-guidance.png"} <= artifacts
    assert float(first["params.sample.guidance"].iloc[0]) == 4.0  # the paper's scale with the paper's point
    assert "paper.test_acc_final" in client.get_run(parent["run_id"].iloc[0]).data.metrics


@pytest.mark.ray
def test_an_interrupted_sweep_resumes_with_no_trial_lost_or_repeated(local_ray, tmp_path):
    def trial(config, settings):  # reports like the real trial; the paper's point fails on its first attempt
        from ray import tune

        attempts = Path(settings.out) / "attempts"
        attempts.mkdir(exist_ok=True)
        trial_id = tune.get_context().get_trial_id()
        (attempts / f"{trial_id}-{time.time_ns()}").write_text("")
        tune.report({"val_acc": math.nan, "loss_total": 1.0, "step": 1})
        if config["memory_size"] == 64 and not (attempts / "failed").exists():
            (attempts / "failed").write_text(trial_id)
            raise RuntimeError("the sweep is interrupted")
        tune.report({"val_acc": 1000 * config["lambda_r"], "epoch": config["epochs"], "step": 2})

    s = settings(tmp_path, trials=3)
    (tmp_path / "base").mkdir()
    with pytest.raises(FileNotFoundError, match="no sweep to resume"):
        open_tuner(s, resume=True)
    first = run_sweep(s, trial_fn=trial, report=False)
    assert (first.trials, first.failed) == (2, 1)
    with pytest.raises(ValueError, match="pass --resume"):
        open_tuner(s, resume=False)
    second = run_sweep(s, resume=True, trial_fn=trial, report=False)
    assert (second.trials, second.failed) == (3, 0)

    started = [p.name.rsplit("-", 1)[0] for p in (Path(s.out) / "attempts").glob("*-*")]
    failed = (Path(s.out) / "attempts" / "failed").read_text()
    assert len(set(started)) == 3 and sorted(started.count(t) for t in set(started)) == [1, 1, 2]
    assert started.count(failed) == 2  # only the interrupted trial ran again
    _, trials = mlflow_runs(Path(s.out))
    assert len(trials) == 3 and set(trials["status"]) == {"FINISHED"}  # one MLflow run per trial
    assert sorted(trials["tags.rdistill.trial_id"]) == sorted(set(started))


# --- Storage and declared GPUs (no Ray) ----------------------------------------------------------------


def test_with_declared_gpus_every_trial_starts_and_placement_decides(tmp_path):
    from rdistill.sweep.tuner import max_concurrent

    assert max_concurrent(settings(tmp_path, use_gpu=True, trials=5)) == 5  # no Ray: nothing read from a cluster
    assert max_concurrent(settings(tmp_path, use_gpu=True, trials=5, max_concurrent=2)) == 2


def test_a_sweep_in_storage_keeps_tune_state_and_trials_under_its_uri(tmp_path):
    import pyarrow.fs as pafs

    from rdistill.sweep.settings import trial_dir
    from rdistill.sweep.tuner import tune_storage

    uri = "s3://bucket/sweeps/a?endpoint_override=127.0.0.1:9&scheme=http"
    stored = SweepSettings(out=uri, base=settings(tmp_path).base)
    path, filesystem = tune_storage(stored)
    assert path == "bucket/sweeps/a" and isinstance(filesystem, pafs.S3FileSystem)
    assert trial_dir(stored, "t1") == "s3://bucket/sweeps/a/trials/t1?endpoint_override=127.0.0.1:9&scheme=http"
    local = settings(tmp_path)
    assert tune_storage(local) == (str(tmp_path / "sweep"), None)
    assert trial_dir(local, "t1") == str(tmp_path / "sweep" / "trials" / "t1")
