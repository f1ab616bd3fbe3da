"""Draws of a set in the evaluation matrix: several sets of one method at one IPC, made with other seeds, pool
into one row (rdistill.evaluate.draws)."""

import pytest

from rdistill.common.stats import mean_std
from rdistill.data import load_dataset
from rdistill.data.shards import Manifest
from rdistill.evaluate.cells import Cell, CellResult, DataSpec, MatrixSpec, plan_cells
from rdistill.evaluate.draws import by_draw, definition, draw_means, draw_seed, group_draws
from rdistill.evaluate.features import compute_features
from rdistill.evaluate.matrix import Matrix, aggregate, evaluate_matrix
from rdistill.generate.select import select_coreset
from rdistill.tracking import matrix_config, matrix_metrics

CLASSES = [str(k) for k in range(10)]


def sampled(seed: int, ipc: int = 10, guidance: float = 2.0, out: str = "runs/a") -> Manifest:
    config = {"sampling": {"seed": seed, "ipc": ipc, "guidance": guidance, "steps": 50},
              "run": {"out": out, "train": {"lambda_d": 0.008}}, "base": {"path": f"{out}/base", "sha256": "b"}}
    return Manifest(CLASSES, list(range(10)), ipc, "minimax", "weights-hash", config=config)


@pytest.fixture(scope="module")
def draws(tmp_path_factory):
    """Two random draws (selection seeds 0 and 1) and one k-center set of digits, IPC 3."""
    root, d = tmp_path_factory.mktemp("draws"), load_dataset("digits")
    for name, method, seed in (("random-0", "random", 0), ("random-1", "random", 1), ("kcenter", "kcenter", 0)):
        select_coreset(d, method, ipc=3, seed=seed, out=root / name, features="pixels")
    return root


def test_a_draw_is_the_set_less_its_seed_its_ipc_and_where_its_run_lived():
    a, b = sampled(0, ipc=10, out="runs/a"), sampled(3, ipc=50, out="/elsewhere/a")
    assert (draw_seed(a), draw_seed(b)) == (0, 3)
    assert definition(a) == definition(b)
    assert group_draws({"x": a, "y": b}, 10) == ["x", "y"]
    random = Manifest(CLASSES, list(range(10)), 3, "random", "real:digits",
                      config={"selection": "random", "seed": 4, "selected": {"0": [1, 2, 3]}})
    assert draw_seed(random) == 4 and "seed" not in definition(random)["config"]


@pytest.mark.parametrize("b, message", [
    (sampled(1, guidance=3.0), r"x and y are both method 'minimax' at IPC 10 but not draws of one set: they differ in "
                               r"config.sampling.guidance"),
    (sampled(0), r"x and y are both method 'minimax' at IPC 10 and the same draw \(seed 0\)"),
])
def test_sets_that_are_not_draws_of_one_set_are_refused(b, message):
    with pytest.raises(ValueError, match=message):
        plan_cells({"x": sampled(0), "y": b}, [10], ["convnet-3"], 1, False)


def test_each_draw_is_tested_on_every_seed_and_a_row_pools_them():
    cells = plan_cells({"x": sampled(0), "y": sampled(1)}, [10], ["convnet-3"], seeds=2, include_full=False)
    assert [(c.surrogate, c.seed) for c in cells] == [("x", 0), ("x", 1), ("y", 0), ("y", 1)]
    finals = {("x", 0): 50.0, ("x", 1): 52.0, ("y", 0): 60.0, ("y", 1): 66.0}
    results = [CellResult(c, finals[c.surrogate, c.seed], 70.0, ((1, 70.0),), 1, 0.1) for c in cells]
    (row,) = aggregate(results)
    assert (row.draws, row.seeds) == (2, 2)
    assert (row.final_mean, row.final_std) == mean_std(list(finals.values()))
    assert row.final_draw_std == mean_std([51.0, 63.0])[1] and row.best_draw_std == 0.0
    table = Matrix((row,), tuple(results)).as_table(markdown=True).splitlines()
    header = [c.strip() for c in table[0].strip("| ").split("|")]
    assert header[-2:] == ["draws", "std over draws final/best"]
    assert table[2].strip("| ").split("|")[-1].strip() == "6.00 / 0.00"
    assert any("draws x seeds" in line for line in table)
    (draws,) = by_draw(results).values()
    assert {f: [r.cell.seed for r in rs] for f, rs in draws.items()} == {"x": [0, 1], "y": [0, 1]}
    assert draw_means(draws) == {"x": 51.0, "y": 63.0} and draw_means(draws, "best") == {"x": 70.0, "y": 70.0}


def test_one_draw_keeps_the_table_as_it_was():
    cells = plan_cells({"x": sampled(0)}, [10], ["convnet-3"], seeds=2, include_full=False)
    results = [CellResult(c, 50.0 + c.seed, 60.0, ((1, 60.0),), 1, 0.1) for c in cells]
    m = Matrix(tuple(aggregate(results)), tuple(results))
    assert m.rows[0].draws == 1 and m.rows[0].final_draw_std is None
    assert "draws" not in m.as_table().splitlines()[0]


def test_the_matrix_pools_two_random_draws_beside_a_single_set(draws):
    folders = tuple(str(draws / n) for n in ("random-0", "random-1", "kcenter"))
    m = evaluate_matrix(MatrixSpec(folders, "digits", seeds=2, ipcs=(2,), epochs=1), progress=False)
    rows = {r.method: r for r in m.rows}
    assert (rows["random"].draws, rows["random"].seeds, rows["kcenter"].draws) == (2, 2, 1)
    pooled = [r.final_acc for r in m.results if r.cell.method == "random"]
    assert len(pooled) == 4 and rows["random"].final_mean == pytest.approx(mean_std(pooled)[0])
    assert {r.cell.surrogate for r in m.results if r.cell.method == "random"} == set(folders[:2])
    alone = [compute_features(DataSpec("digits"), [("random", 2, f)], None, None).mmd["random", 2] for f in folders[:2]]
    assert rows["random"].mmd_linear == pytest.approx((alone[0]["linear"] + alone[1]["linear"]) / 2)
    assert alone[0]["linear"] != alone[1]["linear"]  # two different sets
    assert rows["kcenter"].final_vs_random == pytest.approx(rows["kcenter"].final_mean - rows["random"].final_mean)
    metrics = matrix_metrics(m)
    assert metrics["acc/convnet-3/ipc2/random/draws"] == 2 and "acc/convnet-3/ipc2/kcenter/draws" not in metrics
    assert len(matrix_config(m)["surrogates"]["random"]["folders"]) == 2
