import numpy as np
import pytest
import torch

from rdistill.data.shards import Manifest, read_surrogate, shard_name, shard_row, write_shard
from rdistill.evaluate.cells import Cell, DataSpec, check_teacher, load_data, run_cell
from rdistill.evaluate.protocols import get_protocol
from rdistill.evaluate.streams import FileImages, loader, pack_surrogate
from rdistill.evaluate.training import normalize_input
from tests.tiny_models import write_wnid_folder

WNIDS = ["n01440764", "n01443537"]


def write_set(folder, classes, ipc=3, size=16):
    m = Manifest(list(classes), [0, 1], ipc, "minimax", "src")
    for k, name in enumerate(classes):
        x = torch.randint(0, 256, (ipc, 3, size, size), generator=torch.Generator().manual_seed(k), dtype=torch.uint8)
        rows = [shard_row(x[i], k, name, seed=i, index=i, source="src") for i in reversed(range(ipc))]
        m.record(write_shard(folder, rows, shard_name(k, 0), classes=classes), k, 0)
    m.save(folder)
    return folder


def test_packed_surrogate_holds_the_ipc_prefix_in_dataset_order(tmp_path):
    folder = write_set(tmp_path / "set", WNIDS)
    packed = pack_surrogate(str(folder), 2, WNIDS[::-1], None, scratch=str(tmp_path / "scratch"))
    x, y = read_surrogate(folder, 2).tensors()
    assert packed.labels.tolist() == [1, 1, 0, 0]  # labelled by the position in the classes asked for
    got = torch.stack([packed[i][0] for i in range(4)])
    torch.testing.assert_close(got, x)  # shard order: the set's class 0 (our label 1) first
    assert pack_surrogate(str(folder), 2, WNIDS[::-1], None, scratch=str(tmp_path / "scratch")).folder == packed.folder


def test_file_images_stream_in_batches(tmp_path):
    root = write_wnid_folder(tmp_path / "in", WNIDS, per_class=3, val_per_class=2, size=20)
    d = load_data(DataSpec(f"imagefolder:{root}", image_size=16))
    batches = list(loader(FileImages(d.test), 3))
    assert [len(y) for _, y in batches] == [3, 1] and batches[0][0].shape == (3, 3, 16, 16)
    torch.testing.assert_close(batches[0][0], d.test.images([0, 1, 2]))


def test_imagenet_normalisation_for_rded_only():
    x = torch.zeros(1, 3, 2, 2)  # grey 0.5
    assert torch.equal(normalize_input(x, get_protocol("idc")), x)
    y = normalize_input(x, get_protocol("rded"))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224,
                                                            (0.5 - 0.406) / 0.225]))


def test_rded_cell_on_a_folder_dataset_streams_with_a_teacher(tmp_path):
    from rdistill.models.students import build_student

    root = write_wnid_folder(tmp_path / "in", WNIDS, per_class=3, val_per_class=2, size=20)
    folder = write_set(tmp_path / "set", WNIDS)
    teacher = tmp_path / "teacher.pt"
    torch.save(build_student("resnet-18", 2, 3, 16).state_dict(), teacher)
    data = DataSpec(f"imagefolder:{root}", image_size=16)
    r = run_cell(Cell("minimax", 2, "resnet-18", 0, str(folder)), data, "rded", 1, teacher=str(teacher))
    assert r.epochs == 1 and 0 <= r.final_acc <= 100 and r.history[-1][0] == 1
    torch.save(build_student("resnet-18", 1000, 3, 16).state_dict(), teacher)
    with pytest.raises(ValueError, match="has 1000 classes, the dataset has 2"):
        run_cell(Cell("minimax", 2, "resnet-18", 0, str(folder)), data, "rded", 1, teacher=str(teacher))


def test_teacher_check_refuses_what_is_not_a_resnet():
    with pytest.raises(ValueError, match="no fc.weight"):
        check_teacher({"head.weight": torch.zeros(2, 3)}, 2, "t.pt")


def test_plots_hold_1000_classes(tmp_path):
    from PIL import Image

    from rdistill.evaluate.plots import GRID_MAX_CLASSES, class_colors, grid_classes, sample_grid

    classes = [f"c{k}" for k in range(25)]
    m = Manifest(classes, list(range(25)), 1, "dit", "src")
    for k, name in enumerate(classes):
        rows = [shard_row(torch.zeros(3, 8, 8, dtype=torch.uint8), k, name, seed=0, index=0, source="src")]
        m.record(write_shard(tmp_path / "set", rows, shard_name(k, 0), classes=classes), k, 0)
    m.save(tmp_path / "set")
    shown = grid_classes(25)
    assert len(shown) == GRID_MAX_CLASSES == len(set(shown)) and shown == sorted(shown) and shown == grid_classes(25)
    path = sample_grid(tmp_path / "set", tmp_path / "grid.png")
    assert Image.open(path).size[1] < 2000  # 20 rows, not 25 (nor 1000)
    colors = class_colors(np.arange(1000), 1000)
    assert len({tuple(c) for c in colors.round(6).tolist()}) == 1000
