import pytest

from rdistill.config import RunConfig, flatten, load_config, read_config, save_config, to_dict


def test_defaults_are_the_papers():
    t = RunConfig().train
    assert (t.lambda_r, t.lambda_d, t.memory_size) == (0.002, 0.008, 64)
    assert (t.lr, t.batch_size, t.epochs, t.ema_decay, t.label_dropout) == (1e-3, 8, 8, 0.9999, 0.1)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lambda_r: 0.004\n  epochs: 2\ndata:\n  name: fashion-mnist\n")
    cfg = load_config(path, ["train.epochs=3", "out=runs/x", "data.image_size=16"])
    assert cfg.train.lambda_r == 0.004 and cfg.train.epochs == 3
    assert cfg.data.name == "fashion-mnist" and cfg.data.image_size == 16 and cfg.out == "runs/x"


def test_ints_are_accepted_for_floats_and_null_for_optionals():
    cfg = load_config(None, ["train.lr=1", "train.max_steps=null"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.max_steps is None


@pytest.mark.parametrize("override, match", [
    ("train.lamda_r=0.1", "train.lamda_r"),
    ("train.epochs=two", "train.epochs"),
    ("train.lambda_r=-1", "train.lambda_r = -1"),
    ("train.memory_size=0", "train.memory_size"),
    ("train.method=magic", "train.method"),
    ("train=3", "section"),
    ("noequals", "key=value"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


def test_save_read_round_trip(tmp_path):
    cfg = load_config(None, ["train.lambda_d=0.02", "model.init=/x/y"])
    save_config(cfg, tmp_path / "c.yaml")
    assert read_config(tmp_path / "c.yaml") == cfg
    assert flatten(to_dict(cfg))["train.lambda_d"] == 0.02
