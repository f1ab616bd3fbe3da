"""The full-size path (original DiT checkpoint or diffusers folder + SD-style VAE + ImageNet WNID folders),
exercised with tiny random-weight models saved in the same formats."""

import pytest
import torch

from rdistill.generate.checkpoint import RunMeta
from rdistill.cli import main
from rdistill.config import load_config
from rdistill.data import SUBSETS, imagenet_label
from rdistill.generate.finetune import train
from rdistill.models.dit import dit_callable
from rdistill.models.loading import load_base, load_run
from tiny_models import random_dit, save_original_dit, save_tiny_vae, write_wnid_folder

WOOF = SUBSETS["imagewoof"][:2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fullsize")
    dit = random_dit()
    return {
        "dit": dit,
        "pt": save_original_dit(root / "DiT-tiny-16.pt", dit),
        "vae": save_tiny_vae(root / "sd-vae"),
        "imagenet": write_wnid_folder(root / "imagenet", WOOF),
        "root": root,
    }


def same_function(a, b):
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), torch.tensor([193, 1000])
    with torch.no_grad():
        return torch.allclose(dit_callable(a.eval())(x, t, y), dit_callable(b.eval())(x, t, y), atol=1e-5)


def test_original_checkpoint_and_converted_folder_load_to_the_same_model(assets, capsys):
    out = assets["root"] / "converted"
    assert main(["convert-dit", "--ckpt", str(assets["pt"]), "--out", str(out), "--preset", "dit-tiny"]) == 0
    from_pt, from_folder = load_base(assets["pt"], "dit-tiny"), load_base(out, "dit-tiny")
    assert same_function(from_pt, assets["dit"]) and same_function(from_folder, assets["dit"])


def test_a_checkpoint_of_another_size_is_refused(assets):
    with pytest.raises(ValueError, match="another size"):
        load_base(assets["pt"], "dit-s/2")


def test_minimax_finetune_through_the_vae_on_wnid_folders(assets, tmp_path):
    cfg = load_config(None, [
        f"data.name=imagefolder:{assets['imagenet']}", "data.image_size=16", f"data.codec=vae:{assets['vae']}",
        "model.preset=dit-tiny", f"model.init={assets['pt']}", "train.max_steps=3", "train.batch_size=4",
        f"out={tmp_path / 'run'}",
    ])
    run = train(cfg, progress=False)
    meta = RunMeta.load(run)
    assert meta.model_labels == sorted(imagenet_label(w) for w in WOOF)  # ImageNet labels, not 0..1
    assert meta.latent_shape == [4, 8, 8] and meta.codec.startswith("vae:")
    tuned, _ = load_run(run)
    assert tuned.config.num_embeds_ada_norm == 1000
