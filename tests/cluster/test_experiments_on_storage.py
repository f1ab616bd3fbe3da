"""The experiments on two nodes, in storage.

The sweep: experiments/sweep_lambdas.py --smoke-test with --out on S3 and --tracking-uri on the MLflow server,
every trial's Train worker and evaluation task forced onto node 2 (custom resource n2). Tune's state, each
trial's run and surrogate set and the Fig. 6 plots are read back from S3, the trials from the MLflow server;
node 2's scratch holds its copies, the driver's disk holds nothing of the sweep.

The study: experiments/digits.py --smoke-test with --out on S3: the base pretrained and the runs fine-tuned on
Ray Train and published, the sets, the validation table and the matrix in S3, the matrix in the MLflow server.
"""

import importlib.util
import time
from pathlib import Path

import pytest

from rdistill import storage

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "experiments" / "bases" / "digits-dit-tiny"


def load_script(name: str = "sweep_lambdas"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def swept(cluster, s3, mlflow_url, tmp_path_factory):
    """(out URI, MLflow experiment) of one smoke sweep run from a folder that is not the sweep's."""
    from servers import s3_uri

    base, out = s3_uri(s3, "rdistill", "sweep-bases/digits"), s3_uri(s3, "rdistill", "sweeps/smoke")
    storage.upload_dir(BASE, base)
    t0 = time.monotonic()
    code = load_script().main(["--smoke-test", "--base", base, "--out", out, "--tracking-uri", mlflow_url,
                               "--address", cluster[0].address, "--worker-resources", "n2=0.5"])
    print(f"\nsweep smoke test on node 2, S3 and the MLflow server: {time.monotonic() - t0:.1f} s")
    assert code == 0
    return out


def test_tune_state_runs_sets_and_plots_are_in_s3(swept):
    files = storage.list_files(swept)
    assert any(f.startswith("sweep/experiment_state") for f in files)  # Tune's state, restorable from S3
    trials = sorted({f.split("/")[1] for f in files if f.startswith("trials/")})
    assert len(trials) == 2
    for t in trials:
        assert storage.is_complete(storage.join(swept, "trials", t, "finetune"))  # the published run
        assert any(f.startswith(f"trials/{t}/surrogate-epoch") and f.endswith("/_manifest.json") for f in files)
    assert {f"fig6-{a}.png" for a in ("epochs", "lambda-r", "lambda-d", "memory-size", "guidance")} <= set(files)


def test_the_trials_are_in_the_mlflow_server(swept, mlflow_url):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name("rdistill-sweep").experiment_id])
    parent = [r for r in runs if r.data.tags.get("rdistill.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 2
    assert all("val_acc" in r.data.metrics for r in children)
    assert "best.val_acc" in parent[0].data.metrics and parent[0].info.status == "FINISHED"


def test_the_work_ran_on_node_2_from_its_own_scratch(swept, cluster):
    _, folders = cluster
    n2_runs = Path(folders["n2"]) / "scratch" / "runs"
    assert n2_runs.is_dir() and any(n2_runs.iterdir())  # the trials' runs trained in node 2's scratch
    assert not (Path(folders["head"]) / "scratch" / "runs").exists()  # no Train worker ran on the head


def test_a_second_sweep_into_the_same_location_is_refused(swept, cluster, mlflow_url, capsys):
    code = load_script().main(["--smoke-test", "--base", str(BASE), "--out", swept, "--tracking-uri", mlflow_url,
                               "--address", cluster[0].address])
    assert code == 2 and "holds a sweep already: pass --resume" in capsys.readouterr().err


def test_a_sweep_in_storage_without_an_mlflow_server_is_refused(s3, cluster, monkeypatch, capsys):
    from servers import s3_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = s3_uri(s3, "rdistill", "sweeps/untracked")
    assert load_script().main(["--smoke-test", "--base", str(BASE), "--out", out, "--address", cluster[0].address]) == 2
    assert "MLflow cannot keep a SQLite file" in capsys.readouterr().err
    assert storage.list_files(out) == []  # refused before any work


def test_the_digits_study_runs_in_s3_and_logs_to_the_mlflow_server(cluster, s3, mlflow_url):
    import json

    from mlflow import MlflowClient
    from servers import s3_uri

    out, script = s3_uri(s3, "rdistill", "studies/digits"), load_script("digits")
    t0 = time.monotonic()
    code = script.main(["--smoke-test", "--out", out, "--tracking-uri", mlflow_url, "--address", cluster[0].address],
                       script.PLAN, script.__doc__)
    print(f"\ndigits study smoke test on the cluster, S3 and the MLflow server: {time.monotonic() - t0:.1f} s")
    assert code == 0
    files = set(storage.list_files(out))
    for run in ("base", "runs/difffit", "runs/minimax"):
        assert storage.is_complete(storage.join(out, run))  # trained on Ray Train, published
    for folder in ("sets/dit/guidance-4", "sets/minimax/guidance-1", "sets/random", "sets/kcenter"):
        assert f"{folder}/_manifest.json" in files
    assert len(json.loads(storage.read_text(storage.join(out, "validation.json")))) == 3 * 2 * 2
    assert {"matrix/matrix.md", "matrix/parts/evaluate-ipc-1.pkl", "matrix/parts/evaluate-full.pkl"} <= files
    assert any(f.startswith("matrix/cells/full-all-convnet-3-seed0-") for f in files)  # each cell kept in S3
    client = MlflowClient(tracking_uri=mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name("digits-study").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and {"validation.json", "minutes.json"} <= {a.path for a in client.list_artifacts(
        parent[0].info.run_id)}
