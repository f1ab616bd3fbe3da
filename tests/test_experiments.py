"""Every script in experiments/ runs end to end with --smoke-test (STYLE.md principle 8)."""

import importlib.util
import json
import re
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


def study_smoke_test(name: str, tmp_path, capsys, *flags: str):
    """Run a study script's smoke test; the matrix it prints and what it leaves under --out."""
    script = load(name)
    assert script.main(["--smoke-test", "--out", str(tmp_path), *flags], script.PLAN, script.__doc__) == 0
    return capsys.readouterr().out


def planned_runs(name: str, tmp_path) -> tuple:
    """A study script's settings with every flag it has, and the config of each fine-tuning run it plans."""
    from rdistill.commands.study import build_parser, settings_from_args
    from rdistill.study import finetune_config

    script = load(name)
    flags = ["--out", str(tmp_path)] + (["--ablation"] if "ablation" in script.PLAN else [])
    s = settings_from_args(build_parser(script.PLAN, script.__doc__).parse_args(flags), script.PLAN)
    return s, {m: finetune_config(s, m) for m in s.finetune}


def test_every_planned_run_is_a_valid_config(tmp_path):
    """Each run the scripts plan loads (a bad key fails here, not an hour into a study), and the Table 5
    variants switch the criteria as the paper's ablation does."""
    s, runs = planned_runs("digits", tmp_path)
    assert {m: c.train.method for m, c in runs.items()} == {"difffit": "difffit", "minimax": "minimax"}
    s, runs = planned_runs("fashion_mnist", tmp_path)
    criteria = {m: (c.train.representativeness, c.train.diversity, c.train.lambda_d, c.train.centred)
                for m, c in runs.items() if m in s.ablation}
    assert criteria == {"minimax-r": ("minimax", "off", 0.008, False), "mean-r": ("mean", "off", 0.008, False),
                        "minimax-d": ("off", "minimax", 0.008, False), "mean-d": ("off", "mean", 0.008, False),
                        "mean": ("mean", "mean", 0.008, False),
                        "minimax-ld0.04": ("minimax", "minimax", 0.04, False),
                        "minimax-ld0.2": ("minimax", "minimax", 0.2, False),
                        "minimax-centred": ("minimax", "minimax", 0.008, True),
                        "minimax-centred-ld0.04": ("minimax", "minimax", 0.04, True),
                        "mean-centred": ("mean", "mean", 0.008, True), "mean-d-centred": ("off", "mean", 0.008, True),
                        "minimax-d-centred": ("off", "minimax", 0.008, True),
                        "minimax-r-centred": ("minimax", "off", 0.008, True),
                        "mean-r-centred": ("mean", "off", 0.008, True)}
    assert s.ablation_ipcs == (10, 50) and s.ablation_guidance == (1, 2, 3)
    assert all(c.model.init == s.base.out for c in runs.values())


@pytest.mark.slow
def test_digits_study_smoke_test(tmp_path, capsys):
    out = study_smoke_test("digits", tmp_path, capsys, "--draws", "2")
    for method in METHODS:
        assert f"\n{method} " in out  # a row of the matrix
    assert "guidance 1 (validation" in out or "guidance 4 (validation" in out
    validation = json.loads((tmp_path / "validation.json").read_text())
    assert len(validation) == 3 * 2 * 2  # (method, guidance, IPC), each validated once
    fidelity = json.loads((tmp_path / "fidelity.json").read_text())
    assert len(fidelity["sets"]) == 3 * 2 + 3 and fidelity["judge"]["epochs"] == 1  # every generated set, the coresets
    assert all(0 <= f["all"] <= 100 for f in fidelity["sets"].values()) and "[study] fidelity" in out
    assert (tmp_path / "matrix" / "matrix.md").exists() and "mlflow ui --backend-store-uri sqlite:///" in out
    assert (tmp_path / "sets" / "random-seed1").is_dir() and list((tmp_path / "sets" / "minimax").glob("*-seed1"))
    header = next(line for line in out.splitlines() if line.startswith("method "))
    assert header.split()[-5:] == ["draws", "std", "over", "draws", "final/best"]  # every set but herding, k-center: 2
    assert "paired on the same sampling noise" in out  # generated methods' draws share their noise seeds
    assert re.search(r"^minimax +difffit +\d+ +\S+ +2 +[+-]\d+\.\d\d ± ", out, re.M)  # 2 draws paired, at some IPC
    again = study_smoke_test("digits", tmp_path, capsys, "--draws", "2")  # a rerun reuses every stage, parts too
    assert "[study] training" not in again and "[study] evaluate ipc 1: kept in" in again
    rows = lambda text: [line for line in text.splitlines() if line.split(" ")[0] in METHODS]  # noqa: E731
    assert rows(again) == rows(out) and len(rows(out)) >= 7


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_study_smoke_test(tmp_path, capsys):
    out = study_smoke_test("fashion_mnist", tmp_path, capsys, "--ablation")
    assert "dataset fashion-mnist[Coat,Shirt], protocol small" in out
    ablation = ("minimax[d=off]", "minimax[r=mean,d=off]", "minimax[r=off]", "minimax[r=off,d=mean]",
                "minimax[r=mean,d=mean]", "minimax[ld=0.04]", "minimax[ld=0.2]", "minimax[centred]",
                "minimax[ld=0.04,centred]", "minimax[r=mean,d=mean,centred]", "minimax[r=off,d=mean,centred]",
                "minimax[r=off,centred]", "minimax[d=off,centred]", "minimax[r=mean,d=off,centred]")  # the sets' names
    for method in ("dit", "difffit", "minimax", "random", "herding", *ablation):
        assert f"\n{method} " in out
    validation = json.loads((tmp_path / "validation.json").read_text())
    assert {k for k in validation if k.startswith("mean-d|")} == {"mean-d|2|2"}  # an ablation: its own grid and IPCs
    assert sorted(p.name for p in (tmp_path / "matrix" / "parts").iterdir()) == [
        "evaluate-ipc-1.pkl", "evaluate-ipc-2-ablation.pkl", "evaluate-ipc-2.pkl"]
    cells = [p.name for p in (tmp_path / "matrix" / "cells").iterdir()]  # each student kept as it finished
    assert len(cells) == 2 * 5 + 14 and any(c.startswith("minimax_centred_-ipc2-convnet-3-seed0-") for c in cells)


@pytest.mark.parametrize("change, message", [(dict(ablation=("minimax-x",)), "ablation methods ['minimax-x'] are not"),
                                             (dict(ablation_ipcs=(10, 20)), "ablation IPCs [20] are not among"),
                                             (dict(draws=0), "draws must be >= 1 (1: each set made once), got 0")])
def test_study_refuses_bad_settings_before_any_work(tmp_path, change, message):
    from dataclasses import replace

    from rdistill.study import run_study

    s, _ = planned_runs("fashion_mnist", tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_study(replace(s, **change))
    assert list(tmp_path.iterdir()) == []
