"""The digits base committed for experiments/sweep_lambdas.py (issue 12, item 6) is the sweep's base."""

from pathlib import Path

import torch

from rdistill.commands.train import PRETRAIN_BASE
from rdistill.config import load_config, read_config, to_dict
from rdistill.models.loading import load_base

BASE = Path(__file__).resolve().parents[1] / "experiments" / "bases" / "digits-dit-tiny"


def test_the_committed_base_is_what_the_sweep_would_pretrain_and_it_loads():
    sweep_pretrain = load_config(None, [*PRETRAIN_BASE, "data.name=digits", "model.preset=dit-tiny"])
    saved = read_config(BASE / "config.yaml")
    assert to_dict(saved) == to_dict(sweep_pretrain)  # same recipe (out: runs/pretrain, the CLI default)
    dit = load_base(BASE, "dit-tiny")
    c = dit.config
    assert (c.in_channels, c.sample_size, c.num_embeds_ada_norm) == (1, 8, 10)
    assert all(torch.isfinite(p).all() for p in dit.parameters())
