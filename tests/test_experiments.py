"""Every script in experiments/ runs end to end with --smoke-test (STYLE.md principle 8)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_digits_matrix_smoke_test(capsys, tmp_path):
    load("eval_digits_matrix").main(["--smoke-test", "--run", str(tmp_path / "no-run")])
    out = capsys.readouterr().out
    for method in ("random", "herding", "kcenter", "full"):
        assert method in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out


METHODS = ("dit", "difffit", "minimax", "random", "herding", "kcenter", "full")


def study_smoke_test(name: str, tmp_path, capsys):
    """Run a study script's smoke test; the matrix it prints and what it leaves under --out."""
    script = load(name)
    assert script.main(["--smoke-test", "--out", str(tmp_path)], script.PLAN, script.__doc__) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_digits_study_smoke_test(tmp_path, capsys):
    out = study_smoke_test("digits", tmp_path, capsys)
    for method in METHODS:
        assert f"\n{method} " in out  # a row of the matrix
    assert "guidance 1 (validation" in out or "guidance 4 (validation" in out
    validation = json.loads((tmp_path / "validation.json").read_text())
    assert len(validation) == 3 * 2 * 2  # (method, guidance, IPC), each validated once
    fidelity = json.loads((tmp_path / "fidelity.json").read_text())
    assert len(fidelity["sets"]) == 3 * 2 + 3 and fidelity["judge"]["epochs"] == 1  # every generated set, the coresets
    assert all(0 <= f["all"] <= 100 for f in fidelity["sets"].values()) and "[study] fidelity" in out
    assert (tmp_path / "matrix" / "matrix.md").exists() and "mlflow ui --backend-store-uri sqlite:///" in out
    again = study_smoke_test("digits", tmp_path, capsys)  # a rerun reuses every stage, the matrix's parts too
    assert "[study] training" not in again and "[study] evaluate ipc 1: kept in" in again
    rows = lambda text: [line for line in text.splitlines() if line.split(" ")[0] in METHODS]  # noqa: E731
    assert rows(again) == rows(out) and len(rows(out)) >= 7


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_study_smoke_test(tmp_path, capsys):
    out = study_smoke_test("fashion_mnist", tmp_path, capsys)
    assert "dataset fashion-mnist[Coat,Shirt], protocol small" in out
    for method in ("dit", "difffit", "minimax", "random", "herding"):
        assert f"\n{method} " in out
