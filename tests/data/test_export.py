"""rdistill export: a surrogate set as an ImageFolder tree, in a local folder or in storage (S3)."""

import pytest

from rdistill import storage
from rdistill.data.export import export_imagefolder
from rdistill.data.shards import decode_png
from servers import s3_uri
from test_shards import CLASSES, IPC, _images, _write_set


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.cluster)])
def out(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "tree")
    return s3_uri(request.getfixturevalue("s3"), "rdistill", f"exports/{tmp_path.name}")


def test_export_publishes_every_image_under_its_class(tmp_path, out):
    _write_set(tmp_path / "set")
    assert export_imagefolder(tmp_path / "set", out) == len(CLASSES) * IPC
    files = storage.list_files(out)
    assert sorted({f.split("/")[0] for f in files}) == ["bird_x", "cat", "dog"]
    assert [f for f in files if f.startswith("dog/")] == [f"dog/{i:05d}.png" for i in range(IPC)]
    assert (decode_png(storage.read_bytes(storage.join(out, "bird_x/00003.png"))) == _images(2)[3]).all()


def test_a_rerun_rewrites_the_same_set_and_another_set_needs_overwrite(tmp_path, out):
    _write_set(tmp_path / "set")
    export_imagefolder(tmp_path / "set", out)
    assert export_imagefolder(tmp_path / "set", out) == len(CLASSES) * IPC  # the same set: fine
    storage.write_bytes(storage.join(out, "cat/99999.png"), b"someone else's")
    with pytest.raises(ValueError, match="holds 1 images of another set"):
        export_imagefolder(tmp_path / "set", out)
    export_imagefolder(tmp_path / "set", out, overwrite=True)
    assert "cat/99999.png" not in storage.list_files(out)
