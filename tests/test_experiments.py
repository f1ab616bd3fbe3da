"""Every script in experiments/ runs end to end with --smoke-test (STYLE.md principle 8)."""

import importlib.util
from pathlib import Path

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
