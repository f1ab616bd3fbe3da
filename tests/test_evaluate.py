import shutil

import pandas as pd
import pytest
import torch

from rdistill.common.stats import mean_std
from rdistill.evaluate.cells import FULL, Cell, CellResult, DataSpec, MatrixSpec, plan_cells, run_cell, train_tensors
from rdistill.evaluate.matrix import Matrix, aggregate, evaluate_matrix
from rdistill.data.shards import Manifest
from tests.tiny_models import digits_coresets

CLASSES = [str(k) for k in range(10)]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Two tiny digits sets of real images: random and k-center (pixel features), IPC 3."""
    return digits_coresets(tmp_path_factory.mktemp("sets"), ipc=3)


def manifest(method: str, ipc: int) -> Manifest:
    return Manifest(CLASSES, list(range(10)), ipc, method, "real:digits")


def result(method, ipc, seed, final, best, student="convnet-3") -> CellResult:
    return CellResult(Cell(method, ipc, student, seed, method), final, best, ((1, best), (2, final)), 2, 0.1)


def test_plan_cells_is_every_set_ipc_student_seed_and_the_full_reference():
    cells = plan_cells({"a": manifest("random", 10), "b": manifest("herding", 10)}, [1, 10],
                       ["convnet-3", "resnetap-10"], seeds=2, include_full=True)
    assert len(cells) == 2 * 2 * 2 * 2 + 2 * 2
    assert Cell("herding", 1, "resnetap-10", 1, "b") in cells
    assert [c for c in cells if c.method == FULL] == [
        Cell(FULL, None, s, seed, FULL) for s in ("convnet-3", "resnetap-10") for seed in (0, 1)]
    own = plan_cells({"a": manifest("random", 10)}, None, ["convnet-3"], seeds=1, include_full=False)
    assert own == [Cell("random", 10, "convnet-3", 0, "a")]  # no --ipc: the set's own IPC


@pytest.mark.parametrize("kwargs, message", [
    (dict(seeds=0), "seeds must be >= 1, got 0"),
    (dict(ipcs=[1, 11]), "--ipc 11 is outside 1..10, the IPC of the set in a"),
    (dict(students=[]), "at least one student"),
])
def test_plan_cells_refuses(kwargs, message):
    args = dict(surrogates={"a": manifest("random", 10)}, ipcs=None, students=["convnet-3"], seeds=1,
                include_full=False) | kwargs
    with pytest.raises(ValueError, match=message):
        plan_cells(**args)


def test_two_sets_of_one_method_at_one_ipc_are_refused():
    with pytest.raises(ValueError, match="a and b are both method 'random' at IPC 5"):
        plan_cells({"a": manifest("random", 10), "b": manifest("random", 5)}, [5], ["convnet-3"], 1, False)


def test_mean_std_is_the_population_std():
    assert mean_std([10.0, 20.0]) == (15.0, 5.0)
    m, s = mean_std([70.0, 80.0, 90.0])
    assert m == 80.0 and s == pytest.approx((200 / 3) ** 0.5)


def test_rows_aggregate_seeds_and_carry_the_relative_metrics():
    results = [result("random", 1, 0, 10, 20), result("random", 1, 1, 20, 30),
               result("herding", 1, 0, 30, 40), result("herding", 1, 1, 50, 60),
               result(FULL, None, 0, 90, 92), result(FULL, None, 1, 94, 96)]
    rows = {r.method: r for r in aggregate(results, {("herding", 1): {"linear": 0.5, "rbf": 0.1}})}
    h = rows["herding"]
    assert (h.final_mean, h.final_std, h.best_mean, h.best_std, h.seeds) == (40, 10, 50, 10, 2)
    assert (h.final_vs_random, h.best_vs_random) == (40 - 15, 50 - 25)  # same IPC, same student
    assert (h.final_gap_full, h.best_gap_full) == (92 - 40, 94 - 50)  # full data with hard labels
    assert (h.mmd_linear, h.mmd_rbf) == (0.5, 0.1)
    assert rows["random"].final_vs_random is None and rows["random"].final_gap_full == 92 - 15
    assert rows[FULL].final_gap_full is None and rows[FULL].mmd_linear is None
    assert [r.method for r in aggregate(results)] == ["random", "herding", FULL]  # by IPC, full last


def test_table_says_which_accuracy_is_which_and_csv_round_trips(tmp_path):
    m = Matrix(tuple(aggregate([result("random", 1, 0, 10, 20), result("random", 1, 1, 20, 30)])), ())
    text = m.as_table()
    assert "final acc %" in text and "best acc %" in text and "15.00 ± 5.00" in text and "25.00 ± 5.00" in text
    assert "after the last epoch" in text and "maximum seen during training" in text
    md = m.as_table(markdown=True).splitlines()
    assert [c.strip() for c in md[0].strip("| ").split("|")][:4] == ["method", "IPC", "student", "epochs"]
    assert set(md[1]) <= {"|", "-", " "}
    assert len({len(line) for line in md[:3]}) == 1  # aligned
    m.to_csv(tmp_path / "m.csv")
    back = pd.read_csv(tmp_path / "m.csv")
    assert back.loc[0, "method"] == "random" and back.loc[0, "best_mean"] == 25.0 and back.loc[0, "final_std"] == 5.0


def test_run_cell_trains_on_the_ipc_prefix_and_tests_on_the_real_test_split(sets):
    x, y = train_tensors(DataSpec("digits"), str(sets / "random"), 2)
    assert x.shape == (20, 1, 8, 8) and y.bincount().tolist() == [2] * 10
    r = run_cell(Cell("random", 2, "convnet-3", 0, str(sets / "random")), DataSpec("digits"), "small", 2)
    assert r.epochs == 2 and [e for e, _ in r.history] == [1, 2]
    assert r.final_acc == r.history[-1][1] and r.best_acc == max(a for _, a in r.history)
    assert 0 <= r.final_acc <= 100 and r.state is None


def test_a_generated_sets_guidance_is_a_column_of_the_matrix():
    gen = Manifest(CLASSES, list(range(10)), 10, "minimax", "abc", config={"sampling": {"guidance": 2.5}})
    cells = plan_cells({"g": gen, "r": manifest("random", 10)}, [10], ["convnet-3"], seeds=1, include_full=False)
    assert [c.guidance for c in cells] == [2.5, None]
    results = [CellResult(c, 50.0, 60.0, ((1, 60.0),), 1, 0.1) for c in cells]
    table = Matrix(tuple(aggregate(results)), tuple(results)).as_table(markdown=True).splitlines()
    header = [c.strip() for c in table[0].strip("| ").split("|")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("| ").split("|")] for line in table[2:4]}
    assert rows["minimax"][header.index("guidance")] == "2.5" and rows["random"][header.index("guidance")] == "-"


def test_a_set_with_more_classes_is_evaluated_on_the_datasets_classes_by_name(sets):
    x, y = train_tensors(DataSpec("digits[7,3]"), str(sets / "random"), 2)  # the set holds all ten digits
    full_x, full_y = train_tensors(DataSpec("digits"), str(sets / "random"), 2)
    assert y.tolist() == [1, 1, 0, 0]  # the dataset's labels: "7" is 0, "3" is 1; the set's order (3, then 7)
    assert torch.equal(x, torch.cat([full_x[full_y == 3], full_x[full_y == 7]]))
    m = evaluate_matrix(MatrixSpec((str(sets / "random"),), "digits[7,3]", seeds=1, ipcs=(2,), epochs=1), progress=False)
    assert len(m.results) == 1 and 0 <= m.rows[0].final_mean <= 100


def test_matrix_in_process_with_mmd_under_a_random_network_without_full(sets):
    spec = MatrixSpec((str(sets / "random"), str(sets / "kcenter")), "digits", seeds=2, ipcs=(1, 3), epochs=1)
    m = evaluate_matrix(spec, workers=0, progress=False)
    assert [(r.method, r.ipc) for r in m.rows] == [("random", 1), ("kcenter", 1), ("random", 3), ("kcenter", 3)]
    assert len(m.results) == 8 and all(r.seeds == 2 for r in m.rows)
    assert m.feature_network.startswith("convnet-3, random init")
    assert all(r.mmd_linear > 0 and r.mmd_rbf > 0 for r in m.rows)
    assert m.rows[1].final_vs_random == m.rows[1].final_mean - m.rows[0].final_mean


def spec_for(sets, tmp_path, case):
    base = dict(surrogates=(str(sets / "random"),), dataset="digits", seeds=1, epochs=1)
    if case == "no manifest":
        (tmp_path / "empty").mkdir()
        return MatrixSpec(**base | dict(surrogates=(str(tmp_path / "empty"),)))
    if case == "incomplete":  # the manifest promises 5 images per class, the shards hold 3
        shutil.copytree(sets / "random", tmp_path / "partial")
        m = Manifest.load(tmp_path / "partial")
        m.ipc = 5
        m.save(tmp_path / "partial")
        return MatrixSpec(**base | dict(surrogates=(str(tmp_path / "partial"),)))
    if case == "classes":
        Manifest(list("abcdefghij"), list(range(10)), 3, "random", "x").save(tmp_path)
        return MatrixSpec(**base | dict(surrogates=(str(tmp_path),)))
    return MatrixSpec(**base | {"student": dict(students=("nosuchnet",)), "seeds": dict(seeds=0),
                                "ipc": dict(ipcs=(4,))}[case])


@pytest.mark.parametrize("case, error, message", [
    ("no manifest", FileNotFoundError, "_manifest.json"),
    ("student", ValueError, "unknown student 'nosuchnet'"),
    ("incomplete", ValueError, "partial is incomplete: these classes have fewer than 5 images"),
    ("classes", ValueError, r"classes \['a', 'b', .*'j'\], dataset digits has \['0', '1', .*'9'\]"),
    ("seeds", ValueError, "seeds must be >= 1, got 0"),
    ("ipc", ValueError, "--ipc 4 is outside 1..3"),
])
def test_bad_input_fails_before_any_training(sets, tmp_path, case, error, message):
    with pytest.raises(error, match=message):
        evaluate_matrix(spec_for(sets, tmp_path, case), workers=0, progress=False)
