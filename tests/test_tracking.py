from pathlib import Path

import pytest

from rdistill.data import load_dataset
from rdistill.evaluate.cells import FULL, Cell, CellResult
from rdistill.evaluate.matrix import Matrix, aggregate
from rdistill.generate.select import select_coreset
from rdistill.tracking import PARENT_TAG, client, log_matrix, params_of, log_run, metric_name, mlflow_uri, ui_command


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds)."""
    return mlflow_uri(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def random_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sets") / "random"
    select_coreset(load_dataset("digits"), "random", ipc=2, seed=0, out=out)
    return str(out)


def test_the_local_store_is_sqlite_in_the_out_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(tmp_path / "out") == f"sqlite:///{(tmp_path / 'out').resolve()}/mlflow.db"
    assert mlflow_uri(tmp_path, "http://mlflow:5000") == "http://mlflow:5000"
    assert ui_command(mlflow_uri(tmp_path)) == f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_the_tracking_uri_flag_beats_the_environment_which_beats_the_local_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert mlflow_uri(tmp_path) == "http://head:5000"
    assert mlflow_uri(tmp_path, "http://other:5000") == "http://other:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert mlflow_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_flatten_and_metric_names():
    assert params_of({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None",
                                                                         "e": "{}"}
    assert metric_name("convnet-3", "ipc10", "k center?") == "convnet-3/ipc10/k center_"


def test_a_set_named_with_brackets_logs_its_params(store):
    """An ablation's set name ("minimax[r=mean,d=off]", rdistill.generate.sampling.set_method) is a params key."""
    run = log_run({"surrogates": {"minimax[r=mean,d=off]": {"ipc": 10}}}, {0: {}}, (), "runs", tracking_uri=store)
    assert client(store).get_run(run).data.params == {"surrogates.minimax_r_mean_d_off_.ipc": "10"}


def test_log_run_writes_params_metrics_by_step_artifacts_and_nests_children(store, tmp_path):
    (tmp_path / "note.txt").write_text("hello")
    parent = log_run({"train": {"lr": 0.001}}, {0: {"loss": 2.0}, 5: {"loss": 1.5, "acc": 40.0}},
                     [tmp_path / "note.txt"], "runs", tracking_uri=store, name="parent")
    child = log_run({"x": 1}, {0: {"m": 1.0}}, [(tmp_path / "note.txt", "sub")], "runs", parent,
                    tracking_uri=store, name="child")
    c = client(store)
    run = c.get_run(parent)
    assert run.data.params == {"train.lr": "0.001"} and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in c.get_metric_history(parent, "loss")] == [(0, 2.0), (5, 1.5)]
    assert [a.path for a in c.list_artifacts(parent)] == ["note.txt"]
    assert Path(c.download_artifacts(child, "sub/note.txt", str(tmp_path / "dl"))).read_text() == "hello"
    assert c.get_run(child).data.tags[PARENT_TAG] == parent and run.info.run_name == "parent"


def test_log_matrix_is_a_parent_run_with_a_child_per_cell(store, random_set):
    cells = [Cell("random", 2, "convnet-3", s, random_set) for s in (0, 1)] + [Cell(FULL, None, "convnet-3", 0, FULL)]
    results = [CellResult(c, 50.0 + 10 * i, 60.0 + 10 * i, ((1, 30.0), (2, 60.0 + 10 * i)), 2, 1.0)
               for i, c in enumerate(cells)]
    matrix = Matrix(tuple(aggregate(results)), tuple(results), seconds=120.0)
    parent = log_matrix(matrix, {"evaluate": {"dataset": "digits"}}, experiment="matrix", tracking_uri=store)

    c = client(store)
    run = c.get_run(parent)
    m = run.data.metrics
    assert m["acc/convnet-3/ipc2/random/final_mean"] == 55.0 and m["acc/convnet-3/ipc2/random/final_std"] == 5.0
    assert m["acc/convnet-3/ipc2/random/best_mean"] == 65.0 and m["acc/convnet-3/full/best_mean"] == 80.0
    assert m["gap_full/convnet-3/ipc2/random/best"] == 15.0 and m["minutes"] == 2.0
    assert run.data.params["evaluate.dataset"] == "digits"
    files = {a.path for a in c.list_artifacts(parent)} | {a.path for a in c.list_artifacts(parent, "plots")}
    assert {"matrix.csv", "matrix.md", "config.yaml", "plots/accuracy-vs-ipc-convnet-3.png",
            "plots/samples-random.png"} <= files

    children = c.search_runs([run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'")
    assert sorted(r.info.run_name for r in children) == ["full convnet-3 seed0", "random ipc2 convnet-3 seed0",
                                                         "random ipc2 convnet-3 seed1"]
    child = next(r for r in children if r.info.run_name == "random ipc2 convnet-3 seed1")
    assert child.data.params["seed"] == "1" and child.data.params["surrogate"] == random_set
    assert child.data.metrics["final_acc"] == 60.0 and child.data.metrics["best_acc"] == 70.0
    assert [(h.step, h.value) for h in c.get_metric_history(child.info.run_id, "test_acc")] == [(1, 30.0), (2, 70.0)]


def test_the_draws_of_a_set_are_children_named_by_draw_and_its_row_has_their_spread(store, random_set, tmp_path):
    again = str(tmp_path / "random-seed1")  # a second draw: the sample grid shows the first, the draws plot both
    select_coreset(load_dataset("digits"), "random", ipc=2, seed=1, out=again)
    cells = [Cell("random", 2, "convnet-3", s, f) for f in (random_set, again) for s in (0, 1)]
    results = [CellResult(c, acc, acc, ((1, acc),), 1, 1.0) for c, acc in zip(cells, (50.0, 52.0, 60.0, 62.0))]
    parent = log_matrix(Matrix(tuple(aggregate(results)), tuple(results)), {"evaluate": {"dataset": "digits"}},
                        experiment="draws", tracking_uri=store)

    c = client(store)
    run = c.get_run(parent)
    assert run.data.metrics["acc/convnet-3/ipc2/random/draws"] == 2
    assert run.data.metrics["acc/convnet-3/ipc2/random/final_draw_std"] == 5.0
    children = c.search_runs([run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'")
    assert sorted(r.info.run_name for r in children) == sorted(f"random ipc2 convnet-3 seed{s} draw{d}"
                                                                for d in (0, 1) for s in (0, 1))
    assert "plots/draws-ipc2-convnet-3.png" in {a.path for a in c.list_artifacts(parent, "plots")}
