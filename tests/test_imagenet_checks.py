"""The bad inputs of an ImageNet-1K job, each refused in one line before any work (exit 2 from the CLI)."""

import json
import subprocess
import sys

import pytest
import torch

from rdistill.commands import checks
from rdistill.models.students import build_student
from tests.tiny_models import random_dit, save_original_dit, save_tiny_vae, write_wnid_folder

WNIDS = ["n01440764", "n01443537", "n01484850"]


def test_imagenet_root_lists_the_missing_classes_and_a_missing_val(tmp_path):
    root = write_wnid_folder(tmp_path / "in", WNIDS[:2], per_class=1, val_per_class=1, size=8)
    checks.imagenet_root(str(root), WNIDS[:2])
    with pytest.raises(ValueError, match=r"train/ misses 1 of 3 classes: n01484850 \(great white shark\)"):
        checks.imagenet_root(str(root), WNIDS)
    (root / "val").rename(root / "validation")
    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        checks.imagenet_root(str(root), WNIDS[:2])


def test_vae_folder_must_be_an_autoencoder_kl(tmp_path):
    checks.vae_folder(str(save_tiny_vae(tmp_path / "vae")))
    (tmp_path / "dit").mkdir()
    (tmp_path / "dit" / "config.json").write_text(json.dumps({"_class_name": "DiTTransformer2DModel"}))
    with pytest.raises(ValueError, match="describes a DiTTransformer2DModel, not an AutoencoderKL"):
        checks.vae_folder(str(tmp_path / "dit"))


def test_dit_checkpoint_of_another_size(tmp_path):
    pt = save_original_dit(tmp_path / "dit.pt", random_dit("dit-tiny", sample_size=8))
    checks.dit_checkpoint(str(pt), "dit-tiny")
    with pytest.raises(ValueError, match="another size than dit-s/2"):
        checks.dit_checkpoint(str(pt), "dit-s/2")


def test_teacher_of_another_class_count(tmp_path):
    torch.save(build_student("resnet-18", 10, 3, 16).state_dict(), tmp_path / "t.pt")
    checks.teacher_file(str(tmp_path / "t.pt"), 10)
    with pytest.raises(ValueError, match="has 10 classes, the dataset has 1000"):
        checks.teacher_file(str(tmp_path / "t.pt"), 1000)


def test_rdistill_teacher_trains_and_writes_a_state_dict_evaluate_takes(tmp_path):
    root = write_wnid_folder(tmp_path / "in", WNIDS[:2], per_class=3, val_per_class=1, size=20)
    out = tmp_path / "teacher" / "r18.pt"
    p = subprocess.run([sys.executable, "-m", "rdistill.cli", "teacher", "--dataset", f"imagefolder:{root}",
                        "--out", str(out), "--epochs", "1", "--image-size", "16", "--workers", "0",
                        "--device", "cpu", "--batch-size", "4"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    checks.teacher_file(str(out), 2)
    assert json.loads((tmp_path / "teacher" / "r18.pt.json").read_text())["epochs"] == 1
    p = subprocess.run([sys.executable, "-m", "rdistill.cli", "teacher", "--dataset", f"imagefolder:{root}",
                        "--out", str(out), "--epochs", "0"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--epochs 0 is invalid" in p.stderr
