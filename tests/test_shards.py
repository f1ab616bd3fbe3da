import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rdistill.data import shards
from rdistill.data.shards import (
    Manifest,
    check_overwrite,
    decode_png,
    encode_png,
    read_surrogate,
    shard_is_complete,
    shard_name,
    shard_row,
    write_shard,
)

CLASSES = ["cat", "dog", "bird/x"]  # the last needs a path-safe name
IPC = 4
SOURCE = "ckpt-0123abcd"


def _images(k: int, c: int = 3, s: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(k)
    return torch.randint(0, 256, (IPC, c, s, s), generator=g, dtype=torch.uint8)  # (IPC, C, S, S)


def _write_set(folder: Path, chunk_size: int = 2) -> Manifest:
    """Every class in IPC / chunk_size shards, written last chunk first and rows backwards (the reader sorts)."""
    m = Manifest(CLASSES, [7, 3, 5], IPC, "minimax", SOURCE, config={"lambda_r": 0.002})
    for k, name in enumerate(CLASSES):
        x = _images(k)
        for chunk in reversed(range(IPC // chunk_size)):
            idx = reversed(range(chunk * chunk_size, (chunk + 1) * chunk_size))
            rows = [shard_row(x[i], k, name, seed=1000 * k + i, index=i, source=SOURCE) for i in idx]
            m.record(write_shard(folder, rows, shard_name(k, chunk), classes=CLASSES), k, chunk)
    m.save(folder)
    return m


@pytest.fixture
def surrogate(tmp_path) -> Path:
    folder = tmp_path / "set"
    _write_set(folder)
    return folder


# PNG:


@pytest.mark.parametrize("c", [1, 3])
def test_png_round_trip_is_exact_for_uint8(c):
    x = _images(0, c=c)[0]
    assert torch.equal(decode_png(encode_png(x)), x)


def test_float_to_uint8_is_rounded_and_clamped():
    x = torch.tensor([-1.0, 1.0, 0.5, 0.0, 2.0, -3.0]).view(1, 1, 6)
    # round((x + 1) * 127.5): 0, 255, round(191.25), round(127.5) half to even, clamped, clamped
    assert decode_png(encode_png(x)).flatten().tolist() == [0, 255, 191, 128, 255, 0]
    u = _images(1)[0]
    assert torch.equal(decode_png(encode_png(u.float() / 127.5 - 1.0)), u)  # the reader's inverse


BAD_IMAGES = [  # two channels, no channel axis, int32, NaN
    torch.zeros(2, 4, 4), torch.zeros(4, 4), torch.zeros(3, 4, 4, dtype=torch.int32), torch.full((1, 2, 2), torch.nan)
]


@pytest.mark.parametrize("bad", BAD_IMAGES)
def test_encode_png_rejects_bad_images(bad):
    with pytest.raises(ValueError):
        encode_png(bad)


# Shards:


def test_shard_name():
    assert shard_name(12, 0) == "class-00012-chunk-000.parquet"
    with pytest.raises(ValueError, match="label=-1"):
        shard_name(-1, 0)


def test_round_trip_of_images_and_labels_sorted_by_label_and_index(surrogate):
    s = read_surrogate(surrogate)
    x, y = s.tensors()
    assert x.shape == (len(CLASSES) * IPC, 3, 8, 8) and x.dtype == torch.float32
    assert y.tolist() == [k for k in range(len(CLASSES)) for _ in range(IPC)]
    assert s.indices.tolist() == list(range(IPC)) * len(CLASSES)
    expected = torch.cat([_images(k) for k in range(len(CLASSES))])
    assert torch.equal(torch.round((x + 1) * 127.5).to(torch.uint8), expected)
    img, label = s[IPC + 1]
    assert torch.equal(img, x[IPC + 1]) and label == 1 and len(s) == len(y)


def test_write_leaves_no_temporary_files_even_when_writing_fails(tmp_path, monkeypatch):
    rows = [shard_row(_images(0)[0], 0, "cat", 0, 0, SOURCE)]
    info = write_shard(tmp_path, rows, "a.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"] and info.rows == 1

    def crash(table, where, **kw):
        (where.write if hasattr(where, "write") else Path(where).write_bytes)(b"PAR1 half a shard")  # a buffer, then storage
        raise OSError("disk full")

    monkeypatch.setattr(shards.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_shard(tmp_path, rows, "a.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]  # the old shard is untouched
    assert shard_is_complete(tmp_path, "a.parquet", info.rows, info.sha256)


def test_same_rows_give_the_same_file(tmp_path):
    rows = [shard_row(x, 0, "cat", 0, i, SOURCE) for i, x in enumerate(_images(0))]
    assert write_shard(tmp_path, rows, "a.parquet").sha256 == write_shard(tmp_path, rows, "b.parquet").sha256


def test_write_shard_rejects_bad_rows(tmp_path):
    row = shard_row(_images(0)[0], 0, "cat", 0, 0, SOURCE)
    with pytest.raises(ValueError, match="keys"):
        write_shard(tmp_path, [{k: v for k, v in row.items() if k != "seed"}], "a.parquet")
    with pytest.raises(ValueError, match="null"):
        write_shard(tmp_path, [{**row, "label": None}], "a.parquet")
    with pytest.raises(ValueError, match="0 rows"):
        write_shard(tmp_path, [], "a.parquet")
    with pytest.raises(ValueError, match="'a.json'"):
        write_shard(tmp_path, [row], "a.json")
    assert list(tmp_path.iterdir()) == []


def test_shard_is_complete(surrogate):
    m = Manifest.load(surrogate)
    name, s = next(iter(m.shards.items()))
    assert shard_is_complete(surrogate, name, s["rows"], s["sha256"])
    assert not shard_is_complete(surrogate, name, s["rows"], "0" * 64)
    assert not shard_is_complete(surrogate, name, s["rows"] + 1, s["sha256"])
    assert not shard_is_complete(surrogate, "nope.parquet", s["rows"], s["sha256"])
    path = surrogate / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a truncated shard
    assert not shard_is_complete(surrogate, name, s["rows"], s["sha256"])
    assert not shard_is_complete(surrogate, name, s["rows"], shards._sha256(path))  # checksum ok, unreadable


# Reading subsets:


def test_ipc_takes_the_prefix_of_every_class(surrogate):
    full, _ = read_surrogate(surrogate).tensors()
    s = read_surrogate(surrogate, ipc=2)
    x, y = s.tensors()
    assert y.tolist() == [0, 0, 1, 1, 2, 2] and s.indices.tolist() == [0, 1] * 3
    assert torch.equal(x, full.view(3, IPC, 3, 8, 8)[:, :2].reshape(6, 3, 8, 8))
    with pytest.raises(ValueError, match="ipc=5"):
        read_surrogate(surrogate, ipc=IPC + 1)
    with pytest.raises(ValueError, match="ipc=0"):
        read_surrogate(surrogate, ipc=0)


def test_classes_by_name_or_label(surrogate):
    assert read_surrogate(surrogate, classes=["bird/x", 0]).labels.unique().tolist() == [0, 2]
    with pytest.raises(ValueError, match="'cow'"):
        read_surrogate(surrogate, classes=["cow"])


def test_read_fails_loudly_on_a_missing_or_incomplete_shard(surrogate):
    (surrogate / shard_name(1, 1)).unlink()
    with pytest.raises(FileNotFoundError, match="chunk-001"):
        read_surrogate(surrogate)
    m = Manifest.load(surrogate)
    del m.shards[shard_name(1, 1)]
    m.save(surrogate)  # counts still promise IPC images of class 1
    with pytest.raises(ValueError, match="read 10 images"):
        read_surrogate(surrogate)


# Manifest:


def test_manifest_round_trip(surrogate):
    m = Manifest.load(surrogate)
    assert m.counts == {c: IPC for c in CLASSES} and len(m.shards) == 6
    assert m.shards[shard_name(2, 1)]["label"] == 2 and m.shards[shard_name(2, 1)]["chunk"] == 1
    assert m.model_labels == [7, 3, 5] and m.config == {"lambda_r": 0.002}
    assert not [p for p in surrogate.iterdir() if p.name.startswith(".")]  # atomic saves left nothing


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a surrogate set"):
        Manifest.load(tmp_path)
    (tmp_path / shards.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid surrogate-set manifest"):
        Manifest.load(tmp_path)
    (tmp_path / shards.MANIFEST_NAME).write_text(json.dumps({"classes": ["a"], "colour": 1}))
    with pytest.raises(ValueError, match="colour"):
        Manifest.load(tmp_path)


def test_fingerprint_ignores_progress_but_not_config():
    a = Manifest(["a"], [0], 10, "minimax", SOURCE, config={"seed": 0})
    b = Manifest(["a"], [0], 10, "minimax", SOURCE, config={"seed": 0}, counts={"a": 5})
    c = Manifest(["a"], [0], 10, "minimax", SOURCE, config={"seed": 1})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_check_overwrite(surrogate, tmp_path):
    assert check_overwrite(tmp_path / "new", "x", overwrite=False) is None
    m = Manifest.load(surrogate)
    assert check_overwrite(surrogate, m.fingerprint(), overwrite=False) == m  # same run: resume
    (surrogate / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="another run"):
        check_overwrite(surrogate, "f" * 64, overwrite=False)
    assert len(list(surrogate.glob("*.parquet"))) == 6
    assert check_overwrite(surrogate, "f" * 64, overwrite=True) is None
    assert sorted(p.name for p in surrogate.iterdir()) == ["notes.txt"]


def test_check_overwrite_refuses_shards_without_manifest(surrogate):
    (surrogate / shards.MANIFEST_NAME).unlink()
    with pytest.raises(ValueError, match="no manifest"):
        check_overwrite(surrogate, "x", overwrite=False)


# Export and other readers:


def test_export_imagefolder(surrogate, tmp_path):
    from rdistill.data.export import export_imagefolder

    out = tmp_path / "tree"
    assert export_imagefolder(surrogate, out) == len(CLASSES) * IPC
    assert sorted(p.name for p in out.iterdir()) == ["bird_x", "cat", "dog"]
    assert sorted(p.name for p in (out / "dog").iterdir()) == [f"{i:05d}.png" for i in range(IPC)]
    assert torch.equal(decode_png((out / "bird_x" / "00003.png").read_bytes()), _images(2)[3])


def test_pyarrow_dataset_reads_the_folder(surrogate):
    ds = pytest.importorskip("pyarrow.dataset")
    t = ds.dataset(surrogate).to_table()
    assert t.num_rows == len(CLASSES) * IPC
    assert t.column_names == ["image", "label", "class_name", "seed", "index", "source"]
    assert set(t["source"].to_pylist()) == {SOURCE}
    assert pq.read_schema(surrogate / shard_name(0, 0)).field("image").type.names == ["bytes", "path"]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_data_reads_the_folder(surrogate, ray_local):
    rows = ray_local.data.read_parquet(str(surrogate)).take_all()
    assert sorted((r["label"], r["index"]) for r in rows) == [(k, i) for k in range(3) for i in range(IPC)]
    r = next(r for r in rows if (r["label"], r["index"]) == (2, 3))
    assert torch.equal(decode_png(r["image"]["bytes"]), _images(2)[3])


def test_hugging_face_datasets_decodes_images_and_labels(surrogate, tmp_path):
    datasets = pytest.importorskip("datasets")
    d = datasets.load_dataset(
        "parquet", data_files=str(surrogate / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert d.features["label"].names == CLASSES
    row = next(r for r in d if (r["label"], r["index"]) == (2, 3))
    assert row["image"].mode == "RGB" and row["image"].size == (8, 8)
    assert torch.equal(torch.from_numpy(np.array(row["image"])).permute(2, 0, 1), _images(2)[3])
    assert sorted(d["label"]) == [k for k in range(3) for _ in range(IPC)]
