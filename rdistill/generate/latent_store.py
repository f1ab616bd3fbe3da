"""The latent cache at ImageNet scale: class-sharded latent moments in storage, encoded once for everyone.

`rdistill.generate.latents` keeps a small dataset's cache in one in-process tensor (digits, Fashion-MNIST
with the pixel codec). At 1.28 M images that cache is 84 GB, so a VAE-coded folder dataset keeps it here
instead, in a storage location (rdistill.storage: a folder or a URI) shared by every trial, phase and later
run. One folder per key; the key is a fingerprint of (dataset, split, the dataset's whole class list, image
size, codec weights, hflip, chunk size), so a phase that fine-tunes 20 of the 1000 classes finds the
latents the whole-dataset encoding left:

    <store>/<key>/_meta.json                       what made it (written before any chunk)
    <store>/<key>/<class>/chunk-00000.npy          (n, 2, V, C, h, w) float16: [mean, std] of n images
                                                   of the class, in file order (V = 2: image, mirror image)

Every chunk is published atomically, so a chunk that exists is finished; encoding skips the chunks that
exist (resumable, and nobody encodes twice). `encode_store` is a Ray Data pipeline: CPU tasks read and
centre-crop a chunk's images, an actor pool runs the VAE (bf16 on a GPU where the actor has one) and
publishes the chunk. Memory is a chunk per worker, whatever the dataset's size.

`StoredLatents` reads only the classes it is asked for, memory-mapped (a URI's class folders are first
copied to node-local scratch), and its `batch` is `LatentCache.batch`: same draws, same latents.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Sequence

import numpy as np
import torch

from rdistill import storage
from rdistill.data.base import Split
from rdistill.generate.latents import _draw_flips
from rdistill.models.codec import Codec, codec_identity, sample_latent

FORMAT_VERSION = 1
META = "_meta.json"
CHUNK = 256  # images per chunk: ~50 MB of 256 px pixels per worker, 2 x 256 views per VAE call


def store_key(dataset: str, split: str, classes: Sequence[str], image_size: int, codec_id: str, hflip: bool,
              chunk: int = CHUNK) -> str:
    """The cache folder's name: what determines every latent in it (codec_id: codec_identity(codec))."""
    spec = [FORMAT_VERSION, dataset, split, list(classes), image_size, codec_id, bool(hflip), chunk]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:24]


def chunk_name(class_name: str, j: int) -> str:
    return f"{_safe(class_name)}/chunk-{j:05d}.npy"


def plan_chunks(split: Split, classes: Sequence[str], wanted: Sequence[str] | None = None,
                chunk: int = CHUNK) -> list[tuple[str, int, list[str]]]:
    """(class, chunk index, file paths) of every chunk of `wanted` classes (default all) of a file split."""
    if split.paths is None:
        raise ValueError("the latent store holds folder datasets (files); an in-memory split uses rdistill.generate.latents")
    wanted = classes if wanted is None else wanted
    out = []
    for c in wanted:
        idx = split.indices_of(classes.index(c)).tolist()
        paths = [str(split.paths[i]) for i in idx]
        out += [(c, j, paths[s : s + chunk]) for j, s in enumerate(range(0, len(paths), chunk))]
    return out


# One chunk (the functions Ray Data runs; also used in-process):


def read_chunk(paths: Sequence[str], image_size: int) -> np.ndarray:
    """(n, 3, S, S) uint8: the files centre-cropped as DiT does (rdistill.data.files.center_crop)."""
    from rdistill.data.files import read_image

    x = torch.stack([read_image(p, image_size, 3) for p in paths])  # (n, 3, S, S) in [-1, 1]
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def encode_chunk(codec: Codec, pixels: np.ndarray, hflip: bool, batch_size: int = 64) -> np.ndarray:
    """(n, 2, V, C, h, w) float32 moments of uint8 images (n, 3, S, S), V = 2 with hflip (the mirror image)."""
    x = torch.from_numpy(pixels).float() / 127.5 - 1.0  # (n, 3, S, S), exactly Split.images' values
    views = torch.cat([x, x.flip(-1)]) if hflip else x  # (V*n, 3, S, S)
    m, s = codec.encode_dist(views, batch_size)
    m, s = (t.unflatten(0, (-1, len(x))).transpose(0, 1) for t in (m, s))  # (n, V, C, h, w)
    return torch.stack([m, s], dim=1).float().numpy()


STORE_DTYPE = np.float16  # half of float32's bytes (ImageNet-1K: 42 GB, not 84); 11-bit mantissa, read as float32


def publish_chunk(location: str, name: str, moments: np.ndarray) -> None:
    """Moments as float16: a relative rounding of <= 2^-11, far below the std the sampled latent adds."""
    if np.abs(moments).max(initial=0.0) > np.finfo(STORE_DTYPE).max:
        raise ValueError(f"latent moments up to {np.abs(moments).max():.3g} overflow float16: is the codec's scale right?")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(moments, dtype=STORE_DTYPE))
    storage.write_bytes(storage.join(location, name), buf.getvalue())


class ChunkEncoder:
    """A Ray Data actor: the codec loaded once (bf16 on the actor's GPU, else float32 on CPU), one chunk a call."""

    def __init__(self, codec_spec: str, location: str, hflip: bool):
        from rdistill.models.codec import load_codec

        cuda = torch.cuda.is_available()
        self.codec = load_codec(codec_spec, 3, device="cuda" if cuda else "cpu",
                                dtype=torch.bfloat16 if cuda else torch.float32)
        self.location, self.hflip = location, hflip

    def __call__(self, batch: dict) -> dict:
        names = []
        for name, raw, shape in zip(batch["name"], batch["pixels"], batch["shape"]):
            pixels = np.frombuffer(raw, dtype=np.uint8).reshape(tuple(shape))
            publish_chunk(self.location, name, encode_chunk(self.codec, pixels, self.hflip))
            names.append(name)
        return {"name": np.array(names), "count": np.array([int(s[0]) for s in batch["shape"]])}


def _read_row(row: dict, image_size: int) -> dict:
    pixels = read_chunk(list(row["paths"]), image_size)
    return {"name": row["name"], "pixels": pixels.tobytes(), "shape": np.array(pixels.shape, dtype=np.int64)}


# The cache:


def prepare(location: str, key: str, meta: dict) -> str:
    """The key's folder in the store, its _meta.json written (or checked against what is there)."""
    folder = storage.join(location, key)
    meta_path = storage.join(folder, META)
    if storage.exists(meta_path):
        have = storage.read_json(meta_path)
        if have.get("key") != key:
            raise ValueError(f"{folder} holds latents of key {have.get('key')}, not {key}: delete it")
    else:
        storage.write_json(meta_path, dict(meta, key=key, format=FORMAT_VERSION))
    return folder


def missing_chunks(folder: str, chunks) -> list:
    have = set(storage.list_files(folder))
    return [c for c in chunks if chunk_name(c[0], c[1]) not in have]


def encode_store(folder: str, chunks, *, codec_spec: str, image_size: int, hflip: bool, actors: int = 1,
                 gpus_per_actor: float = 0.0, progress=print) -> int:
    """Encode the missing `chunks` (plan_chunks) into `folder` with Ray Data: read on CPU tasks, encode on a
    pool of `actors` codec actors (each with `gpus_per_actor` GPUs). Returns the number of chunks encoded."""
    import ray

    todo = missing_chunks(folder, chunks)
    if not todo:
        return 0
    items = [{"name": chunk_name(c, j), "paths": list(paths)} for c, j, paths in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # a block per chunk: reads run in parallel
    ds = ds.map(_read_row, fn_kwargs={"image_size": image_size}, num_cpus=1)
    ds = ds.map_batches(ChunkEncoder, fn_constructor_kwargs={"codec_spec": codec_spec, "location": folder,
                                                             "hflip": hflip},
                        batch_size=1, concurrency=max(1, actors), num_gpus=gpus_per_actor,
                        num_cpus=0 if gpus_per_actor else 1)
    done = 0
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):  # tiny rows: the driver holds names only
        done += len(batch["name"])
        if progress and (done % max(1, len(todo) // 20) == 0 or done == len(todo)):
            progress(f"latents: {done}/{len(todo)} chunks encoded into {folder}")
    return done


def encode_in_process(folder: str, chunks, codec: Codec, image_size: int, hflip: bool) -> int:
    """The same chunks, one after another in this process (a Train worker whose phase was not pre-encoded)."""
    todo = missing_chunks(folder, chunks)
    for c, j, paths in todo:
        publish_chunk(folder, chunk_name(c, j), encode_chunk(codec, read_chunk(paths, image_size), hflip))
    return len(todo)


class StoredLatents:
    """The latents of `classes` from a store folder: memory-mapped chunks, an index (N, 2) into them."""

    def __init__(self, folder: str, classes: Sequence[str], counts: Sequence[int], hflip: bool, scratch: str | None = None):
        local = folder if not storage.is_uri(folder) else _to_scratch(folder, classes, scratch)
        self.chunks, where, labels = [], [], []
        for k, (c, n) in enumerate(zip(classes, counts)):
            names = sorted(f for f in os.listdir(os.path.join(local, _safe(c))) if f.endswith(".npy")) \
                if os.path.isdir(os.path.join(local, _safe(c))) else []
            got = 0
            for f in names:
                a = np.load(os.path.join(local, _safe(c), f), mmap_mode="r")  # (n_j, 2, V, C, h, w), not read yet
                where.append(np.stack([np.full(len(a), len(self.chunks)), np.arange(len(a))], 1))
                self.chunks.append(a)
                got += len(a)
            if got != n:
                raise ValueError(f"latent store {folder}: class {c} has {got} encoded images, the split has {n}; "
                                 "run the encoding again (it fills missing chunks) or delete the class folder")
            labels.append(torch.full((n,), k, dtype=torch.long))
        self.where = torch.from_numpy(np.concatenate(where)) if where else torch.zeros(0, 2, dtype=torch.long)
        self.labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        self.views = self.chunks[0].shape[2] if self.chunks else 1
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.chunks[0].shape[3:])  # (C, h, w)

    def batch(self, idx, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """As LatentCache.batch: a random view per sample, then z = mean + std * noise; O(batch) work."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        flip = _draw_flips(len(idx), self.hflip, generator)  # (n,)
        view = flip.long() if self.views == 2 else torch.zeros_like(idx)
        rows = [self.chunks[c][r, :, v] for (c, r), v in zip(self.where[idx].tolist(), view.tolist())]
        moments = torch.from_numpy(np.stack(rows).astype(np.float32))  # (n, 2, C, h, w)
        return sample_latent(moments[:, 0], moments[:, 1], generator), self.labels[idx]


def open_latents(location: str, dataset_name: str, classes: Sequence[str], base_classes: Sequence[str],
                 split: Split, codec: Codec, hflip: bool) -> StoredLatents:
    """The fine-tuning hook: `classes` of `split` (a class subset of the dataset whose classes are
    `base_classes`), encoding in this process whatever chunk of them the store lacks."""
    key = store_key(dataset_name, "train", base_classes, split.image_size, codec_identity(codec), hflip)
    folder = prepare(location, key, {"dataset": dataset_name, "split": "train", "image_size": split.image_size,
                                     "codec": codec.spec, "hflip": hflip, "classes": len(base_classes)})
    encode_in_process(folder, plan_chunks(split, classes), codec, split.image_size, hflip)
    counts = [len(split.indices_of(k)) for k in range(len(classes))]
    return StoredLatents(folder, classes, counts, hflip)


def store_classes(data_cfg, dataset) -> tuple[str, tuple[str, ...]]:
    """(dataset name, its whole class list) that key the store for a run on `data_cfg.name`: a class subset
    NAME[a,b] shares the cache of NAME, so phases of ImageNet-1K reuse one encoding."""
    from rdistill.data import load_dataset
    from rdistill.data.imagenet import IMAGENET_WNIDS, SUBSETS
    from rdistill.data.subsets import parse

    base, sub = parse(data_cfg.name)
    if sub is None:
        return base, tuple(dataset.classes)
    if base == "imagenet1k" or base in SUBSETS:
        return base, IMAGENET_WNIDS if base == "imagenet1k" else SUBSETS[base]
    return base, tuple(load_dataset(base, image_size=data_cfg.image_size, root=data_cfg.root).classes)


def _to_scratch(folder: str, classes: Sequence[str], scratch: str | None) -> str:
    """Copy the class folders of a URI store to node-local scratch (RDISTILL_SCRATCH or the temp folder)."""
    root = scratch or os.environ.get("RDISTILL_SCRATCH") or tempfile.gettempdir()
    local = os.path.join(root, "rdistill-latents", hashlib.sha256(folder.encode()).hexdigest()[:16])
    for c in classes:
        for rel in storage.list_files(storage.join(folder, _safe(c))):
            dst = os.path.join(local, _safe(c), rel)
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                data = storage.read_bytes(storage.join(folder, _safe(c), rel))
                with open(dst + ".part", "wb") as f:
                    f.write(data)
                os.replace(dst + ".part", dst)
    return local


def _safe(class_name: str) -> str:
    """A class name as a folder name (WNIDs are already safe; 'T-shirt/top' is not)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in class_name)
