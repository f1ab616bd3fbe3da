"""The evaluation matrix end to end: `rdistill evaluate` under a real local Ray into a real MLflow store."""

import pytest

import rdistill.cli as cli
from rdistill.evaluate.cells import MatrixSpec
from rdistill.evaluate.matrix import evaluate_matrix
from rdistill.tracking import PARENT_TAG, client, mlflow_uri
from tests.tiny_models import digits_coresets

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a cluster that runs here
    yield
    ray.shutdown()


@pytest.fixture
def sets(tmp_path):
    return [str(digits_coresets(tmp_path, ipc=2) / m) for m in ("random", "kcenter")]


def test_evaluate_runs_cells_as_ray_tasks_and_lands_in_mlflow(local_ray, sets, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rdistill.evaluate.plots.TSNE_MAX_REAL", 100)  # a quick t-SNE
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--surrogate", *sets, "--dataset", "digits", "--students", "convnet-3",
                     "--seeds", "2", "--epochs", "2", "--full", "--workers", "2", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    uri = mlflow_uri(out)
    assert f"mlflow ui --backend-store-uri {uri}" in printed and "best acc %" in printed

    # The same cells in this process give the same numbers (every draw comes from the cell's seed):
    spec = MatrixSpec(tuple(sets), "digits", students=("convnet-3",), seeds=2, epochs=2, full=True)
    here = evaluate_matrix(spec, workers=0, progress=False)
    assert "trained on the full train split" in here.feature_network

    # The parent run holds the matrix, the children the cells:
    c = client(uri)
    exp = c.get_experiment_by_name("rdistill")
    (parent,) = c.search_runs([exp.experiment_id], f"attributes.run_name = 'evaluation-matrix'")
    metrics = parent.data.metrics
    for r in here.rows:
        key = "convnet-3/full" if r.ipc is None else f"convnet-3/ipc2/{r.method}"
        assert metrics[f"acc/{key}/final_mean"] == pytest.approx(r.final_mean)
        assert metrics[f"acc/{key}/best_std"] == pytest.approx(r.best_std)
    assert metrics["mmd/ipc2/kcenter/linear"] == pytest.approx(here.rows[1].mmd_linear)
    assert metrics["vs_random/convnet-3/ipc2/kcenter/best"] == pytest.approx(here.rows[1].best_vs_random)
    assert parent.data.params["protocol.name"] == "small" and parent.data.params["evaluate.epochs"] == "2"
    files = {a.path for a in c.list_artifacts(parent.info.run_id)}
    files |= {a.path for a in c.list_artifacts(parent.info.run_id, "plots")}
    assert {"matrix.csv", "matrix.md", "config.yaml", "plots/accuracy-vs-ipc-convnet-3.png",
            "plots/samples-random.png", "plots/samples-kcenter.png", "plots/tsne.png"} <= files

    children = c.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == len(here.results) == 6  # (2 sets + full) x 2 seeds
    for r in here.results:
        name = f"{r.cell.method}{'' if r.cell.ipc is None else f' ipc{r.cell.ipc}'} convnet-3 seed{r.cell.seed}"
        (child,) = [ch for ch in children if ch.info.run_name == name]
        assert child.data.metrics["final_acc"] == r.final_acc and child.data.metrics["best_acc"] == r.best_acc
        history = c.get_metric_history(child.info.run_id, "test_acc")
        assert [(h.step, h.value) for h in history] == list(r.history)
