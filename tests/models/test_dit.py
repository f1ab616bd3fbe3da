import pytest
import torch

from rdistill.models.difffit import apply_difffit, count_parameters, trainable_parameters
from rdistill.models.dit import PRESETS, architecture, build_dit, dit_callable, from_architecture, init_dit_, share_embedders


def tiny(num_classes=10):
    return init_dit_(build_dit("dit-tiny", sample_size=8, in_channels=4, num_classes=num_classes), seed=0)


def randomize_(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_dit_xl2_parameter_counts_on_meta_device():
    dit = build_dit("dit-xl/2", sample_size=32, in_channels=4, num_classes=1000, device="meta")
    total, _ = count_parameters(dit)
    assert total == 674_834_720  # 675.1 M of the original minus its 0.3 M frozen pos_embed (a buffer here)
    apply_difffit(dit)
    total, trainable = count_parameters(dit)
    assert trainable == 1_739_552  # SPEC.md: ~1.74 M
    assert total - trainable > 673_000_000


def test_embedders_are_shared_and_use_the_original_timestep_frequencies():
    dit = tiny()
    emb = dit.transformer_blocks[0].norm1.emb
    assert all(b.norm1.emb is emb for b in dit.transformer_blocks)
    assert emb.time_proj.downscale_freq_shift == 0


def test_share_embedders_refuses_blocks_with_different_copies():
    from diffusers import DiTTransformer2DModel

    dit = DiTTransformer2DModel(sample_size=8, in_channels=4, out_channels=8, patch_size=2, num_layers=2,
                                num_attention_heads=2, attention_head_dim=16, num_embeds_ada_norm=10)
    with pytest.raises(ValueError, match="block 1"):
        share_embedders(dit)


def test_fresh_difffit_model_computes_what_the_base_computes():
    base = randomize_(tiny())
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([0, 3, 10])
    with torch.no_grad():
        before = dit_callable(base)(x, t, y)
        after = dit_callable(apply_difffit(base))(x, t, y)
    assert torch.equal(before, after)


def test_difffit_trains_biases_class_table_and_gammas_only():
    dit = apply_difffit(tiny())
    names = set(trainable_parameters(dit))
    assert "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight" in names
    assert "transformer_blocks.0.attn1.to_q.difffit_gamma" in names
    assert "transformer_blocks.1.ff.difffit_gamma" in names  # first half of 4 blocks: 0 and 1
    assert not any(n.startswith("transformer_blocks.2") and n.endswith("gamma") for n in names)
    assert not any(n.endswith(".weight") and "embedding_table" not in n for n in names)
    gammas = [n for n in names if n.endswith("gamma")]
    assert len(gammas) == 2 * 6  # attention, MLP, q, k, v, output projection per block


def test_gamma_changes_the_output():
    dit = apply_difffit(randomize_(tiny()))
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([10, 20]), torch.tensor([1, 2])
    with torch.no_grad():
        before = dit_callable(dit)(x, t, y)
        dit.transformer_blocks[0].ff.difffit_gamma.fill_(2.0)
        after = dit_callable(dit)(x, t, y)
    assert not torch.allclose(before, after)


def test_init_makes_blocks_identity_and_output_zero():
    dit = tiny()
    out = dit_callable(dit)(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert out.shape == (2, 8, 8, 8) and out.abs().max() == 0


def test_architecture_round_trip():
    dit = tiny()
    again = from_architecture(architecture(dit))
    assert architecture(again) == architecture(dit)


def test_unknown_preset_and_bad_patch():
    with pytest.raises(ValueError, match="dit-huge"):
        build_dit("dit-huge", 8, 4, 10)
    with pytest.raises(ValueError, match="patch"):
        build_dit("dit-tiny/4", 6, 4, 10)
    assert {"dit-tiny", "dit-s/2", "dit-b/2", "dit-l/2", "dit-xl/2"} <= set(PRESETS)


# fast_forward_ (DiTCall): one conditioning embedding per forward, rows independent of the batch (issue 12):


def inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g), torch.arange(n) % 11


def plain_and_fast(model):
    import copy

    plain = copy.deepcopy(model)
    return (lambda x, t, y: plain(x, timestep=t, class_labels=y).sample), dit_callable(model)


@pytest.mark.parametrize("tied", [True, False])
def test_fast_forward_gives_the_plain_models_outputs_and_gradients(tied):
    from diffusers import DiTTransformer2DModel

    if tied:
        model = randomize_(tiny())
    else:  # a diffusers DiT with a separate embedder per block
        torch.manual_seed(0)
        model = randomize_(DiTTransformer2DModel(sample_size=8, in_channels=4, out_channels=8, patch_size=2, num_layers=2,
                                                 num_attention_heads=2, attention_head_dim=32, num_embeds_ada_norm=10))
        for block in model.transformer_blocks:  # no random label dropout: it would differ between the two
            block.norm1.emb.class_embedder.dropout_prob = 0.0
    plain, fast = plain_and_fast(model.train())
    x, t, y = inputs(6)
    a, b = plain(x, t, y), fast(x, t, y)
    assert torch.equal(a, b)  # 4 or more images: bit for bit
    a.square().sum().backward()
    b.square().sum().backward()
    grads = lambda m: {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
    ga, gb = grads(plain.__closure__[0].cell_contents), grads(model)
    assert ga.keys() == gb.keys()  # the embedder's gradient is summed in another order: within rounding
    assert all(torch.allclose(ga[k], gb[k], rtol=1e-5, atol=1e-6 * ga[k].abs().max()) for k in ga)
    small = [fast(x[:n], t[:n], y[:n]) for n in (1, 2, 3)]  # padded few-row products: within rounding
    assert all(torch.allclose(s, a[: len(s)], atol=1e-5) for s in small)


def test_the_conditioning_embedder_runs_once_per_forward(monkeypatch):
    from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings

    calls, forward = [], CombinedTimestepLabelEmbeddings.forward
    monkeypatch.setattr(CombinedTimestepLabelEmbeddings, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    model = randomize_(tiny())
    plain, fast = plain_and_fast(model)
    x, t, y = inputs(4)
    plain(x, t, y)
    assert len(calls) == len(model.transformer_blocks) + 1  # diffusers: every block and the output
    calls.clear()
    fast(x, t, y)
    fast(x, t, y)  # the same tensors again: a new forward computes it anew (nothing outlives a forward)
    assert len(calls) == 2
    assert model.transformer_blocks[0].norm1.emb.__dict__["_memo"] is None


def test_fast_forward_keeps_the_state_dict_and_sees_through_a_ddp_wrapper():
    model = randomize_(tiny())
    keys = list(model.state_dict())

    class Wrapper(torch.nn.Module):  # what DDP looks like to DiTCall: the DiT under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *a, **k):
            return self.module(*a, **k)

    dit_callable(Wrapper(model))
    assert list(model.state_dict()) == keys and model._rdistill_embedders
    assert type(model.proj_out_1).__name__ == "_RowStableLinear"


def test_an_image_gives_the_same_bits_alone_or_in_any_batch():
    fast = dit_callable(randomize_(tiny()).eval())
    x, t, y = inputs(9)
    with torch.no_grad():
        whole = fast(x, t, y)
        for n in range(1, 9):
            assert torch.equal(fast(x[:n], t[:n], y[:n]), whole[:n]), n


def test_difffit_gammas_are_a_multiply_in_the_forward_not_hooks_and_pickle():
    import pickle

    import torch.nn.functional as F

    dit = apply_difffit(randomize_(tiny()))
    q = dit.transformer_blocks[0].attn1.to_q
    assert not any(m._forward_hooks for m in dit.modules())
    with torch.no_grad():
        q.difffit_gamma.copy_(torch.linspace(0.5, 1.5, q.out_features))
    x = torch.randn(5, q.in_features)
    assert torch.equal(q(x), F.linear(x, q.weight, q.bias) * q.difffit_gamma)
    copy = pickle.loads(pickle.dumps(dit))
    inputs_ = (torch.randn(4, 4, 8, 8), torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        assert torch.equal(dit_callable(copy)(*inputs_), dit_callable(dit)(*inputs_))
