import os

# Two cores: one torch thread per process, or concurrent processes thrash (STACK.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def no_tracking_uri_from_another_test(monkeypatch):
    """rdistill honours MLFLOW_TRACKING_URI, and mlflow.set_tracking_uri sets it: no test sees another's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A real training run folder for the sampling tests: dit-tiny pretrained on digits for 3 steps."""
    from rdistill.config import load_config
    from rdistill.generate.finetune import train

    out = tmp_path_factory.mktemp("run") / "digits"
    cfg = load_config(None, ["data.name=digits", "model.preset=dit-tiny", "train.method=pretrain",
                             "train.max_steps=3", "train.batch_size=16", f"out={out}"])
    return train(cfg, progress=False)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 API on loopback (moto_server), its endpoint URL; dummy credentials in the environment, as
    the cluster tests' nodes get them. Started once, stopped by its own handle."""
    from servers import DUMMY_AWS, start_moto, stop

    for k, v in DUMMY_AWS.items():
        os.environ.setdefault(k, v)
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto"))
    yield endpoint
    stop(proc)
