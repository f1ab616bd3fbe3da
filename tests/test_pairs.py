"""Paired gaps: generated methods compared draw by draw on the same sampling noise (rdistill.evaluate.pairs)."""

import pickle

import pytest

from rdistill.common.stats import mean_std
from rdistill.data.shards import Manifest
from rdistill.evaluate.cells import Cell, CellResult, MatrixSpec
from rdistill.evaluate.matrix import Matrix, aggregate, evaluate_matrix
from rdistill.evaluate.pairs import noise_key, noise_keys, paired_gaps
from rdistill.tracking import matrix_metrics

TOPS = ["T-shirt/top", "Pullover", "Coat", "Shirt"]
TEN = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def generated(method: str, seed: int, classes=TOPS, labels=(0, 2, 4, 6), guidance: float = 2.0) -> Manifest:
    return Manifest(list(classes), list(labels), 50, method, f"{method}-weights", counts={c: 50 for c in TOPS},
                    config={"sampling": {"seed": seed, "ipc": 50, "guidance": guidance}})


def test_the_noise_is_the_seed_and_each_written_class_s_model_label():
    base = generated("dit", 1, classes=TEN, labels=range(10), guidance=6.0)  # the base knows all ten classes
    assert noise_key(base) == noise_key(generated("difffit", 1)) == (1, (("Coat", 4), ("Pullover", 2), ("Shirt", 6),
                                                                          ("T-shirt/top", 0)))
    assert noise_key(generated("difffit", 2)) != noise_key(base)
    assert noise_key(generated("difffit", 1, labels=(0, 1, 2, 3))) != noise_key(base)  # other labels: other noise
    random = Manifest(TOPS, [0, 1, 2, 3], 50, "random", "real:fashion-tops", config={"selection": "random", "seed": 1})
    assert noise_key(random) is None and noise_keys({"r": random, "d": base}) == {"d": noise_key(base)}


def results(finals: dict) -> list[CellResult]:
    """finals: (method, draw) -> the final accuracy of student seeds 0, 1; best = final + 10."""
    return [CellResult(Cell(method, 10, "convnet-3", seed, f"sets/{method}-{draw}"), acc, acc + 10, ((1, acc),), 1, 0.1)
            for (method, draw), accs in finals.items() for seed, acc in enumerate(accs)]


FINALS = {("dit", 0): (50, 52), ("dit", 1): (55, 55), ("dit", 2): (60, 62),
          ("minimax", 0): (54, 54), ("minimax", 1): (54, 56), ("minimax", 2): (65, 67),
          ("difffit", 0): (40, 40),  # one draw: pairs with nothing
          ("random", 0): (70, 70), ("random", 1): (50, 50)}  # real images: their draws pair with nothing


def keys() -> dict:
    return {f"sets/{m}-{d}": (d, ()) for m, d in FINALS if m != "random"}


def test_gaps_pair_the_methods_draw_by_draw_and_leave_out_what_shares_too_little():
    (gap,) = paired_gaps(results(FINALS), keys())
    assert (gap.method, gap.other, gap.ipc, gap.student, gap.draws) == ("minimax", "dit", 10, "convnet-3", 3)
    per_draw = [54 - 51, 55 - 55, 66 - 61]
    assert (gap.final_mean, gap.final_std) == pytest.approx(mean_std(per_draw))
    assert (gap.best_mean, gap.best_std) == pytest.approx(mean_std(per_draw))
    assert gap.ahead == 2  # draw 1 is level: not ahead
    assert paired_gaps(results(FINALS), keys(), min_draws=4) == ()
    (one,) = [g for g in paired_gaps(results(FINALS), keys(), min_draws=1) if g.method == "difffit"
              and g.other == "dit"]
    assert (one.draws, one.final_mean, one.final_std) == (1, -11.0, 0.0)


def test_the_table_and_mlflow_show_the_gaps_and_leave_them_out_when_there_are_none():
    rs = results(FINALS)
    m = Matrix(tuple(aggregate(rs)), tuple(rs), noise=keys())
    lines = m.as_table(markdown=True).splitlines()
    gap_rows = [line for line in lines if line.startswith("| minimax | dit")]
    assert len(gap_rows) == 1 and "+2.67 ± 2.05" in gap_rows[0] and gap_rows[0].rstrip(" |").endswith("2 of 3")
    assert any(line.startswith("paired on the same sampling noise") for line in m.as_table().splitlines())
    metrics = matrix_metrics(m)
    assert metrics["paired/convnet-3/ipc10/minimax-vs-dit/final_mean"] == pytest.approx(8 / 3)
    assert metrics["paired/convnet-3/ipc10/minimax-vs-dit/ahead"] == 2
    alone = Matrix(tuple(aggregate(rs)), tuple(rs))
    assert "paired" not in alone.as_table() and not any(k.startswith("paired/") for k in matrix_metrics(alone))


def test_a_matrix_kept_before_it_carried_its_noise_keys_still_loads():
    rs = results(FINALS)
    m = Matrix(tuple(aggregate(rs)), tuple(rs), noise=keys())
    assert pickle.loads(pickle.dumps(m)).gaps == m.gaps != ()
    old = object.__new__(Matrix)  # what unpickling a study part kept by an earlier rdistill gives: gaps, no noise
    old.__dict__.update({k: v for k, v in m.__dict__.items() if k != "noise"}, gaps=())
    assert old.noise is None and old.gaps == () and old.as_table() == Matrix(m.rows, m.results).as_table()


@pytest.fixture(scope="module")
def two_generators(run_dir, tmp_path_factory):
    """The tiny digits base and a 2-step Difffit fine-tune of it, each sampled with seeds 0 and 1 (IPC 2)."""
    from rdistill.config import load_config
    from rdistill.generate.finetune import train
    from rdistill.generate.sampling import SampleJob, run_sampling

    root = tmp_path_factory.mktemp("pairs")
    cfg = load_config(None, ["data.name=digits", "model.preset=dit-tiny", "train.method=difffit", f"model.init={run_dir}",
                             "train.max_steps=2", "train.batch_size=16", f"out={root / 'difffit'}"])
    runs = {"dit": str(run_dir), "difffit": str(train(cfg, progress=False))}
    folders = []
    for name, run in runs.items():
        for seed in (0, 1):
            folders.append(str(root / f"{name}-{seed}"))
            run_sampling(SampleJob(run, folders[-1], ipc=2, seed=seed, steps=2, guidance=2.0), progress=False)
    return tuple(folders)


def test_a_real_matrix_pairs_the_draws_of_two_generators(two_generators, tmp_path):
    from rdistill.evaluate.plots import write_plots

    m = evaluate_matrix(MatrixSpec(two_generators, "digits", seeds=1, ipcs=(2,), epochs=1), progress=False)
    (gap,) = m.gaps
    assert (gap.method, gap.other, gap.draws) == ("difffit", "dit", 2)
    acc = {(r.cell.method, r.cell.surrogate[-1]): r.final_acc for r in m.results}
    per_draw = [acc["difffit", d] - acc["dit", d] for d in "01"]
    assert (gap.final_mean, gap.final_std) == pytest.approx(mean_std(per_draw))
    assert "paired on the same sampling noise" in m.as_table()
    plots = {p.name: p for p in write_plots(m, tmp_path)}
    assert plots["draws-ipc2-convnet-3.png"].read_bytes()[:4] == b"\x89PNG"
