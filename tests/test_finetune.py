import pytest
import torch
from safetensors.torch import load_file

from rdistill.generate.checkpoint import RunMeta, latest_checkpoint
from rdistill.config import load_config
from rdistill.generate.finetune import Callbacks, batch_indices, train
from rdistill.models.loading import load_run

TINY = ["data.name=digits", "model.preset=dit-tiny", "train.batch_size=16", "train.log_every=1"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "base"
    cfg = load_config(None, TINY + ["train.method=pretrain", "train.max_steps=4", "train.ema_decay=0.5", f"out={out}"])
    return train(cfg, progress=False)


def finetune_cfg(base_run, out, *extra):
    return load_config(None, TINY + [f"model.init={base_run}", f"out={out}", *extra])


def weights(run_dir, kind):
    return load_file(latest_checkpoint(run_dir) / f"{kind}.safetensors")


def test_pretrain_leaves_a_loadable_run(base_run):
    meta = RunMeta.load(base_run)
    assert meta.peft == "full" and meta.init is None and meta.latent_shape == [1, 8, 8]
    assert meta.classes == [str(i) for i in range(10)]
    dit, _ = load_run(base_run)
    assert sum(p.numel() for p in dit.parameters()) == len(torch.cat([v.flatten() for v in weights(base_run, "ema").values()]))


def test_minimax_finetune_moves_the_ema_away_from_the_base(base_run, tmp_path):
    run = train(finetune_cfg(base_run, tmp_path / "ft", "train.max_steps=6", "train.ema_decay=0.9"), progress=False)
    meta = RunMeta.load(run)
    assert meta.peft == "difffit" and meta.init == str(base_run)
    tuned, _ = load_run(run)
    base, _ = load_run(base_run)
    tuned_p, base_p = dict(tuned.named_parameters()), dict(base.named_parameters())
    table = "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"
    assert not torch.equal(tuned_p[table], base_p[table])
    frozen = "transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(tuned_p[frozen], base_p[frozen])
    lines = (run / "losses.csv").read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("step,loss_total")
    assert lines[-1].split(",")[4] != ""  # the representativeness term was logged


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(base_run, tmp_path):
    whole = train(finetune_cfg(base_run, tmp_path / "whole", "train.max_steps=8"), progress=False)
    stopped = train(finetune_cfg(base_run, tmp_path / "parts", "train.max_steps=8"), progress=False,
                    callbacks=Callbacks(should_stop=lambda step: step == 3))
    assert latest_checkpoint(stopped).name == "step-0000003"
    resumed = train(finetune_cfg(base_run, tmp_path / "parts", "train.max_steps=8"), progress=False)
    for kind in ("trainable", "ema", "memory"):
        a, b = weights(whole, kind), weights(resumed, kind)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), kind
    rows = (resumed / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 9))


def test_a_folder_of_another_run_is_refused(base_run, tmp_path):
    train(finetune_cfg(base_run, tmp_path / "ft", "train.max_steps=1"), progress=False)
    with pytest.raises(ValueError, match="lambda_r"):
        train(finetune_cfg(base_run, tmp_path / "ft", "train.max_steps=2", "train.lambda_r=0.5"), progress=False)


def test_finetune_needs_a_base_and_a_matching_size(base_run, tmp_path):
    with pytest.raises(ValueError, match="model.init"):
        train(load_config(None, TINY + [f"out={tmp_path / 'x'}"]), progress=False)
    with pytest.raises(ValueError, match="another size"):
        train(finetune_cfg(base_run, tmp_path / "y", "model.preset=dit-s/2"), progress=False)


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(0, step, steps_per_epoch=5, n=42, batch=8) for step in range(5)])
    assert len(seen.unique()) == 40
    assert not torch.equal(batch_indices(0, 0, 5, 42, 8), batch_indices(0, 5, 5, 42, 8))


def test_a_training_step_never_reads_device_values_on_the_host():
    """On the meta device tensors have no values: an .item(), .tolist(), .unique() or `if tensor` in the step raises."""
    from dataclasses import replace

    from rdistill.config import RunConfig
    from rdistill.generate.diffusion import linear_schedule
    from rdistill.generate.ema import update_ema
    from rdistill.generate.finetune import train_step
    from rdistill.generate.minimax import MinimaxMemory
    from rdistill.models.difffit import apply_difffit, trainable_parameters
    from rdistill.models.dit import build_dit, dit_callable

    dit = apply_difffit(build_dit("dit-tiny", 8, 1, 10, device="meta")).train()
    params = trainable_parameters(dit)
    opt = torch.optim.AdamW(params.values(), lr=1e-3)
    ema = {k: p.detach().clone() for k, p in params.items()}
    cfg = replace(RunConfig(), train=replace(RunConfig().train, method="minimax"))
    memory, g = MinimaxMemory(4, 64), torch.Generator().manual_seed(0)
    z0, y = torch.randn(6, 1, 8, 8, device="meta"), torch.tensor([0, 1, 2, 0, 1, 2])  # host labels, as loaded
    for _ in range(3):
        metrics = train_step(dit_callable(dit), linear_schedule(), memory, z0, y, y, 10, g, cfg)
        opt.zero_grad(set_to_none=True)
        metrics.pop("loss").backward()
        opt.step()
        update_ema(ema, params, 0.9)
    assert set(metrics) == {"loss_mse", "loss_vb", "loss_pos", "loss_neg", "loss_total"}
    assert all(v.device.type == "meta" and v.dim() == 0 for v in metrics.values())  # read at log steps only


def test_each_epoch_is_shuffled_once(monkeypatch):
    from rdistill.generate import finetune

    calls, randperm = [], torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: calls.append(a) or randperm(*a, **k))
    finetune.epoch_permutation.cache_clear()
    for step in range(10):  # two epochs of five steps
        batch_indices(0, step, steps_per_epoch=5, n=42, batch=8)
    assert len(calls) == 2


def test_centred_criteria_fine_tune_and_resume_to_the_same_run(base_run, tmp_path):
    """train.centred: the centre (the mean training latent) is drawn the same way on a resume."""
    keys = ["train.max_steps=6", "train.centred=true"]
    whole = train(finetune_cfg(base_run, tmp_path / "whole", *keys), progress=False)
    train(finetune_cfg(base_run, tmp_path / "parts", *keys), progress=False,
          callbacks=Callbacks(should_stop=lambda step: step == 3))
    resumed = train(finetune_cfg(base_run, tmp_path / "parts", *keys), progress=False)
    raw = train(finetune_cfg(base_run, tmp_path / "raw", "train.max_steps=6"), progress=False)
    a, b, c = (weights(r, "memory") for r in (whole, resumed, raw))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the memories hold centred rows


def test_mean_latent_is_the_mean_of_the_drawn_training_latents():
    from rdistill.generate.finetune import mean_latent

    class Latents:  # latent i is the constant i, shape (1, 2, 2)
        def batch(self, idx, g):
            return idx.float()[:, None, None, None].expand(-1, 1, 2, 2), idx

    assert torch.allclose(mean_latent(Latents(), 10, seed=0), torch.full((4,), 4.5))  # all ten: 0..9
    few = mean_latent(Latents(), 1000, seed=0, limit=8, chunk=3)
    assert few.shape == (4,) and torch.equal(few, mean_latent(Latents(), 1000, seed=0, limit=8, chunk=5))
