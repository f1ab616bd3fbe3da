"""Surrogate sets on disk: a folder of Parquet shards (one or more per class) plus `_manifest.json`.

Shards are named `class-00012-chunk-000.parquet` and hold rows of SCHEMA, whose Hugging Face metadata
makes `datasets` decode `image` as Image and `label` as ClassLabel. The manifest's leading "_" makes
`pyarrow.dataset.dataset(folder)` and `pandas.read_parquet(folder)` skip it (as Spark's `_SUCCESS`);
`ray.data.read_parquet(folder)` reads only `*.parquet`. The folder is a storage location (rdistill.storage:
a local path or a URI such as s3://bucket/sets/x); files are written to a hidden temporary name and moved
into place, so no reader ever sees half a file.

Pixels: a float image in [-1, 1] is stored as uint8 `round((x + 1) * 127.5)` clamped to [0, 255]
(values outside [-1, 1] saturate, ties round to even); reading gives `u8 / 127.5 - 1` back.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch
from PIL import Image

from rdistill import __version__, storage
from rdistill.common.files import stale_temporaries

MANIFEST_NAME = "_manifest.json"

_COLUMNS = [
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),  # HF Image layout
    ("label", pa.int64()),  # dataset class index 0..K-1
    ("class_name", pa.string()),
    ("seed", pa.int64()),
    ("index", pa.int64()),  # the image's index within its class, 0..IPC-1
    ("source", pa.string()),  # generator checkpoint hash, or "real:<dataset>"
]


def _hf_metadata(classes: Sequence[str] | None) -> dict[bytes, bytes]:
    """The `huggingface` schema metadata that makes `datasets` decode image/label as Image/ClassLabel."""
    value = {"string": {"dtype": "string", "_type": "Value"}, "int64": {"dtype": "int64", "_type": "Value"}}
    features = {name: value.get(str(t)) for name, t in _COLUMNS}
    features["image"] = {"_type": "Image"}
    if classes is not None:
        features["label"] = {"names": list(classes), "_type": "ClassLabel"}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


SCHEMA = pa.schema(_COLUMNS, metadata=_hf_metadata(None))  # label as plain int64


def schema_for(classes: Sequence[str]) -> pa.Schema:
    """SCHEMA whose Hugging Face metadata names the classes (label decodes as ClassLabel)."""
    return SCHEMA.with_metadata(_hf_metadata(classes))


# Images <-> PNG:


def encode_png(img: torch.Tensor) -> bytes:
    """(C, H, W) uint8, or float in [-1, 1] (stored as round((x+1)*127.5) clamped) -> PNG bytes (L or RGB)."""
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (C, H, W) with C in (1, 3), got shape {tuple(img.shape)}")
    if img.is_floating_point():
        if not torch.isfinite(img).all():
            raise ValueError("image holds NaN or inf values; cannot store it as PNG")
        img = torch.round((img.detach().float() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    elif img.dtype != torch.uint8:
        raise ValueError(f"expected a float or uint8 image, got dtype {img.dtype}")
    a = img.cpu().permute(1, 2, 0).numpy()  # (H, W, C)
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, "PNG")  # mode L or RGB
    return buf.getvalue()


def decode_png(data: bytes) -> torch.Tensor:
    """PNG bytes (grayscale or RGB) -> (C, H, W) uint8."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "RGB"):
            raise ValueError(f"expected a grayscale (L) or RGB PNG, got mode {im.mode!r}")
        a = np.asarray(im)
    return torch.from_numpy(a.reshape(a.shape[0], a.shape[1], -1).copy()).permute(2, 0, 1)


def safe_name(class_name: str) -> str:
    """A class name usable as one path component: runs of other than [word . -] become "_"."""
    return re.sub(r"[^\w.-]+", "_", class_name).strip(".") or "_"


def shard_row(img: torch.Tensor, label: int, class_name: str, seed: int, index: int, source: str) -> dict:
    """One row of SCHEMA for an image (C, H, W)."""
    path = f"{safe_name(class_name)}/{index:05d}.png"
    return {"image": {"bytes": encode_png(img), "path": path}, "label": label, "class_name": class_name,
            "seed": seed, "index": index, "source": source}


# Shards:


@dataclass(frozen=True)
class ShardInfo:
    name: str
    rows: int
    sha256: str  # of the file's bytes


def shard_name(label: int, chunk: int) -> str:
    if label < 0 or chunk < 0:
        raise ValueError(f"label and chunk must be >= 0, got label={label}, chunk={chunk}")
    return f"class-{label:05d}-chunk-{chunk:03d}.parquet"


def _sha256(data: bytes | str | Path) -> str:  # of bytes, or of a local file's bytes
    return hashlib.sha256(data if isinstance(data, bytes) else Path(data).read_bytes()).hexdigest()


def _to_table(rows: list[dict] | pa.Table, schema: pa.Schema) -> pa.Table:
    is_table = isinstance(rows, pa.Table)
    cols = rows.column_names if is_table else sorted({k for r in rows for k in r})
    if set(cols) != set(schema.names):
        raise ValueError(f"shard rows have keys {sorted(cols)}; a shard row has exactly {schema.names}")
    t = rows.select(schema.names).cast(schema) if is_table else pa.Table.from_pylist(rows, schema=schema)
    if any(t[n].null_count for n in schema.names) or t["image"].combine_chunks().field("bytes").null_count:
        raise ValueError("a shard row holds a null value (every column and image.bytes are required)")
    return t


def write_shard(folder, rows: list[dict] | pa.Table, name: str, classes: Sequence[str] | None = None) -> ShardInfo:
    """Write rows (dicts from `shard_row`, or a table) to folder/name atomically: a temporary file, then
    rename. Pass `classes` (all class names) so `datasets` reads `label` as a ClassLabel."""
    if len(rows) == 0 or Path(name).name != name or not name.endswith(".parquet"):
        raise ValueError(f"need rows and a file name ending in .parquet, got {len(rows)} rows and {name!r}")
    table = _to_table(rows, schema_for(classes) if classes is not None else SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(storage.join(folder, name), buf.getvalue())  # no fsync: a crash's empty file fails its sha
    return ShardInfo(name, table.num_rows, _sha256(buf.getvalue()))


def shard_is_complete(folder, name: str, expected_rows: int, expected_sha256: str) -> bool:
    """Whether folder/name exists with this checksum and row count; never raises on a bad file."""
    try:
        data = storage.read_bytes(storage.join(folder, name))
        return _sha256(data) == expected_sha256 and pq.ParquetFile(io.BytesIO(data)).metadata.num_rows == expected_rows
    except (OSError, ValueError, pa.ArrowException):
        return False


# Manifest:


@dataclass
class Manifest:
    """What a surrogate set is (classes, IPC, method, source, config) and what has been written of it."""

    classes: list[str]
    model_labels: list[int]  # the generator's class label of each class
    ipc: int
    method: str  # e.g. "minimax", "dit", "random", "herding", "k-center"
    source: str  # generator checkpoint hash, or "real:<dataset>"
    counts: dict[str, int] = field(default_factory=dict)  # class name -> images written
    shards: dict[str, dict] = field(default_factory=dict)  # name -> {rows, sha256, label, chunk}
    config: dict = field(default_factory=dict)  # the resolved run configuration
    created_by: str = f"rdistill {__version__}"

    def fingerprint(self) -> str:
        """Hash of what defines the set (not of what has been written so far)."""
        keys = ("classes", "model_labels", "ipc", "method", "source", "config")
        return hashlib.sha256(json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()).hexdigest()

    def record(self, info: ShardInfo, label: int, chunk: int) -> None:
        """Add a written shard and update the class's count."""
        self.shards[info.name] = {"rows": info.rows, "sha256": info.sha256, "label": label, "chunk": chunk}
        self.counts[self.classes[label]] = sum(s["rows"] for s in self.shards.values() if s["label"] == label)

    def save(self, folder) -> str:
        path = storage.join(folder, MANIFEST_NAME)
        storage.write_text(path, json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, folder) -> Manifest:
        path = storage.join(folder, MANIFEST_NAME)
        try:
            text = storage.read_text(path)
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(f"{folder} is not a surrogate set: it has no {MANIFEST_NAME}") from None
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path} is not a valid surrogate-set manifest: {e}") from e


def check_overwrite(folder, manifest_fingerprint: str, overwrite: bool) -> Manifest | None:
    """Before writing a set: the folder's manifest if it is this run's (resume), else None.

    Shards of another run (other fingerprint, or no manifest) raise ValueError unless `overwrite`,
    which deletes them and their manifest (other files stay)."""
    names = [n for n in storage.list_files(folder) if "/" not in n]
    old = [n for n in names if n.endswith(".parquet")] + (stale_temporaries(folder) if not storage.is_uri(folder) else [])
    has_manifest = MANIFEST_NAME in names
    if has_manifest:
        m = Manifest.load(folder)
        if m.fingerprint() == manifest_fingerprint:
            return m
    elif not old:
        return None
    if not overwrite:
        what = f"fingerprint {m.fingerprint()[:12]}, not {manifest_fingerprint[:12]}" if has_manifest else "no manifest"
        raise ValueError(f"{folder} holds shards of another run ({what}); pass --overwrite (overwrite=True) "
                         "to replace them, or choose another --out")
    for name in old + ([MANIFEST_NAME] if has_manifest else []):
        storage.delete(storage.join(folder, name))
    return None



# Reading:


class SurrogateSet(torch.utils.data.Dataset):
    """Images of a surrogate set sorted by (label, index), kept as PNG bytes and decoded on access."""

    def __init__(self, png: list[bytes], labels: torch.Tensor, indices: torch.Tensor, manifest: Manifest):
        self.png, self.labels, self.indices, self.manifest = png, labels, indices, manifest
        self.classes = tuple(manifest.classes)

    def __len__(self) -> int:
        return len(self.png)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return decode_png(self.png[i]).float() / 127.5 - 1.0, int(self.labels[i])  # (C, H, W) in [-1, 1]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (N, C, H, W) float in [-1, 1] and labels (N,) int64."""
        return torch.stack([decode_png(b) for b in self.png]).float() / 127.5 - 1.0, self.labels.clone()


def read_surrogate(folder, ipc: int | None = None, classes: Sequence[str | int] | None = None) -> SurrogateSet:
    """The set in folder; `ipc` keeps images with index < ipc, `classes` (names or labels) a subset."""
    m = Manifest.load(folder)
    ipc = m.ipc if ipc is None else ipc
    if not 1 <= ipc <= m.ipc:
        raise ValueError(f"ipc={ipc} is outside 1..{m.ipc}, the IPC of the set in {folder}")
    names = m.classes
    unknown = [c for c in classes or [] if c not in names and c not in range(len(names))]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; the set has {len(names)} classes: {names}")
    chosen = range(len(names)) if classes is None else sorted({names.index(c) if c in names else c for c in classes})
    filesystem, base = storage.resolve(folder)
    names = [n for n, s in sorted(m.shards.items()) if s["label"] in chosen]
    present = set(storage.list_files(folder))
    missing = [storage.join(folder, n) for n in names if n not in present]
    if missing:
        raise FileNotFoundError(f"shards listed in the manifest are missing: {missing}")
    flt = (ds.field("index") < ipc) & ds.field("label").isin(list(chosen))
    t = ds.dataset([f"{base}/{n}" for n in names], format="parquet", filesystem=filesystem).to_table(
        columns=["image", "label", "index"], filter=flt)
    t = t.sort_by([("label", "ascending"), ("index", "ascending")])
    expected = sum(min(ipc, m.counts.get(m.classes[k], 0)) for k in chosen)
    if t.num_rows == 0 or t.num_rows != expected:
        raise ValueError(f"{folder}: read {t.num_rows} images with index < {ipc}, the manifest promises {expected}")
    labels = torch.tensor(t["label"].to_pylist(), dtype=torch.long)
    png = t["image"].combine_chunks().field("bytes").to_pylist()
    return SurrogateSet(png, labels, torch.tensor(t["index"].to_pylist(), dtype=torch.long), m)
