import pytest

from rdistill.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr()


def test_info_counts_dit_xl2_without_weights(capsys):
    code, out = run(capsys, "info", "--model", "dit-xl/2", "--peft", "difffit")
    assert code == 0
    assert "674,931,488" in out.out and "1,739,552" in out.out


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--dataset", "mnist-nope"], "mnist-nope"),
    (["finetune", "--dataset", "digits", "--lambda-r", "-1", "--init", "x"], "train.lambda_r = -1.0"),
    (["finetune", "--dataset", "digits", "--memory-size", "0", "--init", "x"], "train.memory_size = 0"),
    (["finetune", "--dataset", "digits", "--init", "/no/such/base"], "/no/such/base"),
    (["pretrain", "--dataset", "imagefolder:/no/such/folder"], "/no/such/folder"),
    (["pretrain", "train.nope=1"], "train.nope"),
    (["info", "--latent", "4by32"], "4by32"),
])
def test_bad_input_is_one_line_naming_the_value(capsys, tmp_path, argv, message):
    code, out = run(capsys, *argv, *([] if argv[0] == "info" else ["--out", str(tmp_path / "r")]))
    assert code == 2
    assert message in out.err and "Traceback" not in out.err


def test_help_explains_every_training_flag(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for flag in ("--lambda-r", "--lambda-d", "--memory-size", "--init", "--method", "KEY=VALUE"):
        assert flag in text


def test_pretrain_then_finetune_with_the_default_folders(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = run(capsys, "finetune", "--dataset", "digits", "--method", "minimax", "--no-progress")
    assert code == 2 and "rdistill pretrain" in out.err  # no base yet: says how to make one
    assert run(capsys, "pretrain", "--dataset", "digits", "--max-steps", "2", "--no-progress")[0] == 0
    code, out = run(capsys, "finetune", "--dataset", "digits", "--method", "minimax", "--max-steps", "2", "--no-progress")
    assert code == 0 and "runs/finetune" in out.out
    assert (tmp_path / "runs" / "finetune" / "checkpoints" / "step-0000002" / "ema.safetensors").exists()
