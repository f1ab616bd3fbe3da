import numpy as np
import pytest
import torch

from rdistill import storage
from rdistill.data import load_dataset
from rdistill.generate import latent_store as ls
from rdistill.generate.latents import encode_split
from rdistill.models.codec import codec_identity, load_codec
from tests.tiny_models import save_tiny_vae, write_wnid_folder

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    root = write_wnid_folder(tmp / "imagenet", WNIDS, per_class=5, val_per_class=1, size=20)
    vae = save_tiny_vae(tmp / "vae")
    codec = load_codec(f"vae:{vae}", 3)
    return tmp, root, codec


def test_stored_latents_draw_what_the_in_process_cache_draws(setup, tmp_path):
    _, root, codec = setup
    d = load_dataset(f"imagefolder:{root}", image_size=16)
    folder = ls.prepare(str(tmp_path), "k", {})
    assert ls.encode_in_process(folder, ls.plan_chunks(d.train, d.classes, chunk=2), codec, 16, True) == 9
    latents = ls.StoredLatents(folder, d.classes, [5, 5, 5], hflip=True)
    cache = encode_split(codec, d.train, hflip=True, batch_size=4)
    idx = torch.tensor([14, 0, 7, 3, 7])
    z1, y1 = latents.batch(idx, torch.Generator().manual_seed(3))
    z2, y2 = cache.batch(idx, torch.Generator().manual_seed(3))
    torch.testing.assert_close(z1, z2, atol=1e-3, rtol=2**-10)  # the same draws; the store's moments are float16
    assert y1.tolist() == y2.tolist() == [2, 0, 1, 0, 1]


def test_a_class_subset_reads_only_its_classes_and_nothing_is_encoded_twice(setup, tmp_path):
    _, root, codec = setup
    d = load_dataset(f"imagefolder:{root}", image_size=16)
    sub = load_dataset(f"imagefolder:{root}[{WNIDS[2]}]", image_size=16)
    key = ls.store_key("imagefolder", "train", d.classes, 16, codec_identity(codec), True)
    folder = ls.prepare(str(tmp_path), key, {})
    ls.encode_in_process(folder, ls.plan_chunks(d.train, d.classes, [WNIDS[2]]), codec, 16, True)
    assert storage.list_files(folder) == ["_meta.json", f"{WNIDS[2]}/chunk-00000.npy"]
    latents = ls.StoredLatents(folder, sub.classes, [5], hflip=True)
    assert len(latents) == 5 and latents.latent_shape == (4, 8, 8)
    assert ls.missing_chunks(folder, ls.plan_chunks(d.train, d.classes, [WNIDS[2]])) == []
    with pytest.raises(ValueError, match=f"class {WNIDS[0]} has 0 encoded images"):
        ls.StoredLatents(folder, (WNIDS[0],), [5], hflip=True)


def test_finetune_latent_source_uses_the_store_for_a_class_subset(setup, tmp_path):
    from rdistill.config import load_config
    from rdistill.generate.finetune import latent_source

    _, root, codec = setup
    name = f"imagefolder:{root}[{WNIDS[0]},{WNIDS[1]}]"
    cfg = load_config(None, [f"data.name={name}", "data.image_size=16", f"data.latent_store={tmp_path}"])
    sub = load_dataset(name, image_size=16)
    latents = latent_source(cfg, sub, True, tmp_path / "run", False, codec)
    assert isinstance(latents, ls.StoredLatents) and len(latents) == 10
    (key,) = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == ["_meta.json", *WNIDS[:2]]
    assert not (tmp_path / "run").exists()  # nothing kept per run folder


@pytest.mark.slow
def test_ray_data_pipeline_encodes_every_chunk_once(setup, tmp_path):
    import ray

    _, root, codec = setup
    d = load_dataset(f"imagefolder:{root}", image_size=16)
    chunks = ls.plan_chunks(d.train, d.classes, chunk=2)
    folder = ls.prepare(str(tmp_path), "k", {})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ls.encode_store(folder, chunks, codec_spec=codec.spec, image_size=16, hflip=True, progress=None) == 9
        assert ls.encode_store(folder, chunks, codec_spec=codec.spec, image_size=16, hflip=True, progress=None) == 0
    finally:
        ray.shutdown()
    a = np.load(tmp_path / "k" / WNIDS[1] / "chunk-00002.npy")
    assert a.shape == (1, 2, 2, 4, 8, 8)
    want = ls.encode_chunk(codec, ls.read_chunk([str(d.train.paths[9])], 16), True)
    assert a.dtype == np.float16  # stored at half the bytes; rounded by at most 2^-11 relative
    np.testing.assert_allclose(a.astype(np.float32), want, rtol=2**-10, atol=1e-6)
