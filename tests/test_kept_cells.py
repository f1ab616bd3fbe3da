"""Kept cells (rdistill.evaluate.kept): a stopped matrix loses no finished cell, and a kept cell is never stale."""

import pytest

import rdistill.evaluate.matrix as matrix_module
from rdistill.data.shards import Manifest
from rdistill.evaluate.cells import Cell, DataSpec, MatrixSpec
from rdistill.evaluate.kept import cell_key
from rdistill.evaluate.matrix import evaluate_matrix
from tests.tiny_models import digits_coresets


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return digits_coresets(tmp_path_factory.mktemp("sets"), ipc=2)


@pytest.fixture
def counted(monkeypatch):
    """run_cell, counting its calls; `fail_after` makes it die like a killed worker after that many cells."""
    calls, real = {"n": 0, "fail_after": None}, matrix_module.run_cell

    def run_cell(cell, *args, **kwargs):
        if calls["fail_after"] is not None and calls["n"] >= calls["fail_after"]:
            raise RuntimeError("worker died")
        calls["n"] += 1
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(matrix_module, "run_cell", run_cell)
    return calls


def spec_of(sets, **kw) -> MatrixSpec:
    return MatrixSpec((str(sets / "random"), str(sets / "kcenter")), "digits", seeds=2, epochs=1, **kw)


def test_a_stopped_matrix_reruns_only_the_cells_it_had_not_finished(sets, tmp_path, counted, capsys):
    keep = str(tmp_path / "cells")
    counted["fail_after"] = 3
    with pytest.raises(RuntimeError, match="worker died"):
        evaluate_matrix(spec_of(sets), progress=False, keep=keep)
    assert len(list((tmp_path / "cells").iterdir())) == 3

    counted.update(n=0, fail_after=None)
    again = evaluate_matrix(spec_of(sets), progress=False, keep=keep)
    assert counted["n"] == 1 and len(again.results) == 4  # 2 sets x 2 seeds; only the fourth ran now
    assert "3 of 4 cells kept" in capsys.readouterr().out

    counted["n"] = 0
    fresh = evaluate_matrix(spec_of(sets), progress=False)  # the same numbers without the kept cells
    assert counted["n"] == 4
    assert [(r.cell, r.final_acc, r.history) for r in fresh.results] == \
        [(r.cell, r.final_acc, r.history) for r in again.results]


def test_the_full_references_student_is_kept_for_the_feature_network(sets, tmp_path, counted):
    spec, keep = spec_of(sets, ipcs=(1,), full=True), str(tmp_path / "cells")
    first = evaluate_matrix(spec, progress=False, keep=keep)
    counted["n"] = 0
    again = evaluate_matrix(spec, progress=False, keep=keep)
    assert counted["n"] == 0
    assert "trained on the full train split" in again.feature_network
    assert [r.mmd_linear for r in again.rows] == pytest.approx([r.mmd_linear for r in first.rows])
    assert all(r.state is None for r in again.results)  # the weights stay in the kept file, not in the matrix


def test_other_settings_or_a_set_sampled_again_are_other_cells(sets):
    cell, data = Cell("minimax[r=off]", 10, "convnet-3", 0, "sets/m", 2.0), DataSpec("digits")
    key = cell_key(cell, data, "small", None, None, "f1")
    assert key.startswith("minimax_r=off_-ipc10-convnet-3-seed0-") and key.endswith(".pkl")
    assert key == cell_key(cell, data, "small", None, None, "f1")
    others = [cell_key(cell, data, "small", 5, None, "f1"), cell_key(cell, data, "small", None, None, "f2"),
              cell_key(cell, DataSpec("digits", image_size=32), "small", None, None, "f1"),
              cell_key(cell, data, "rded", None, "t.pt", "f1"),
              cell_key(Cell("minimax[r=off]", 10, "convnet-3", 1, "sets/m", 2.0), data, "small", None, None, "f1")]
    assert len({key, *others}) == 6


def test_a_set_sampled_again_into_the_same_folder_is_not_taken_for_the_kept_one(sets, tmp_path, counted):
    spec, keep = MatrixSpec((str(sets / "random"),), "digits", seeds=1, epochs=1), str(tmp_path / "cells")
    evaluate_matrix(spec, progress=False, keep=keep)
    original = Manifest.load(sets / "random")
    again = Manifest.load(sets / "random")
    again.config = {**again.config, "seed": 1}  # what it is made from differs: its fingerprint does
    again.save(sets / "random")
    try:
        counted["n"] = 0
        evaluate_matrix(spec, progress=False, keep=keep)
        assert counted["n"] == 1 and len(list((tmp_path / "cells").iterdir())) == 2
    finally:
        original.save(sets / "random")


def test_an_unreadable_kept_file_runs_its_cell_again(sets, tmp_path, counted):
    spec, keep = MatrixSpec((str(sets / "random"),), "digits", seeds=1, epochs=1), tmp_path / "cells"
    evaluate_matrix(spec, progress=False, keep=str(keep))
    (kept,) = keep.iterdir()
    kept.write_bytes(b"not a pickle")
    counted["n"] = 0
    m = evaluate_matrix(spec, progress=False, keep=str(keep))
    assert counted["n"] == 1 and 0 <= m.rows[0].final_mean <= 100
