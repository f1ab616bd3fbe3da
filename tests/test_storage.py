"""rdistill.storage on a local folder, and the same tests on S3 (moto_server on loopback; marked cluster)."""

import os

import pytest
from pyarrow import fs as pafs

from rdistill import storage
from servers import DUMMY_AWS, s3_uri


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.cluster)])
def root(request, tmp_path):
    """A fresh storage location: a local folder, or a prefix in a bucket of the S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return s3_uri(request.getfixturevalue("s3"), "rdistill", tmp_path.name)


def test_resolve_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    filesystem, path = storage.resolve("runs/a")
    assert isinstance(filesystem, pafs.LocalFileSystem) and path == str(tmp_path / "runs" / "a")
    filesystem, path = storage.resolve("s3://bucket/runs/a?endpoint_override=http://127.0.0.1:9&scheme=http")
    assert isinstance(filesystem, pafs.S3FileSystem) and path == "bucket/runs/a"
    assert storage.join("s3://b/x?scheme=http", "y", "z.txt") == "s3://b/x/y/z.txt?scheme=http"
    assert storage.join("s3://b", "y") == "s3://b/y"
    assert storage.join("runs", "y") == os.path.join("runs", "y")


def test_a_uri_pyarrow_cannot_open_is_a_value_error():
    with pytest.raises(ValueError, match="nosuch://x"):
        storage.resolve("nosuch://x/y")
    with pytest.raises(ValueError, match="empty"):
        storage.resolve("")


def test_write_read_exists_list_delete(root):
    storage.write_text(storage.join(root, "a.txt"), "hello")
    storage.write_bytes(storage.join(root, "sub", "b.bin"), b"\x00\x01")
    assert storage.read_text(storage.join(root, "a.txt")) == "hello"
    assert storage.read_bytes(storage.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert storage.exists(storage.join(root, "a.txt")) and not storage.exists(storage.join(root, "c.txt"))
    assert storage.list_files(root) == ["a.txt", "sub/b.bin"]
    with pytest.raises(FileNotFoundError, match="c.txt"):
        storage.read_bytes(storage.join(root, "c.txt"))
    storage.delete(storage.join(root, "sub"))
    assert storage.list_files(root) == ["a.txt"]


def test_a_json_table_reads_empty_until_written_then_round_trips(root):
    table = storage.join(root, "validation.json")
    assert storage.read_json(table) == {}
    storage.write_json(table, {"minimax|2|10": 57.5, "dit|6|10": 55.0})
    assert storage.read_json(table) == {"dit|6|10": 55.0, "minimax|2|10": 57.5}
    assert storage.read_text(table).index("dit") < storage.read_text(table).index("minimax")  # keys sorted


def test_a_write_leaves_no_temporary_object_and_an_overwrite_replaces(root):
    target = storage.join(root, "m.json")
    storage.write_text(target, "1")
    storage.write_text(target, "2")
    filesystem, path = storage.resolve(root)
    names = [i.base_name for i in filesystem.get_file_info(pafs.FileSelector(path, recursive=True))]
    assert names == ["m.json"] and storage.read_text(target) == "2"


def test_a_failed_write_publishes_nothing(root, monkeypatch):
    class Boom(Exception):
        pass

    class FailingMove:  # the real filesystem, except that publishing (the final move) fails
        def __init__(self, filesystem):
            self.filesystem = filesystem

        def __getattr__(self, name):
            return getattr(self.filesystem, name)

        def move(self, src, dst):
            raise Boom(src)

    real = storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda loc: (FailingMove(real(loc)[0]), real(loc)[1]))
    with pytest.raises(Boom):
        storage.write_text(storage.join(root, "x.txt"), "partial")
    monkeypatch.undo()
    assert not storage.exists(storage.join(root, "x.txt")) and storage.list_files(root) == []
    filesystem, path = storage.resolve(root)
    left = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    assert [i.path for i in left if i.type == pafs.FileType.File] == []  # no temporary file left behind


def test_upload_then_download_a_folder_through_its_marker(root, tmp_path):
    src = tmp_path / "src"
    (src / "ckpt").mkdir(parents=True)
    (src / "config.yaml").write_text("a: 1\n")
    (src / "ckpt" / "model.bin").write_bytes(b"w" * 1000)
    dst = storage.join(root, "run")
    assert not storage.is_complete(dst)
    assert storage.upload_dir(src, dst) == ["ckpt/model.bin", "config.yaml"]
    assert storage.is_complete(dst)
    scratch = tmp_path / "scratch"
    assert storage.download_dir(dst, scratch) == ["ckpt/model.bin", "config.yaml"]
    assert (scratch / "ckpt" / "model.bin").read_bytes() == b"w" * 1000
    assert (scratch / "config.yaml").read_text() == "a: 1\n"


def test_download_refuses_an_unfinished_folder(root, tmp_path):
    storage.write_text(storage.join(root, "half", "config.yaml"), "a: 1\n")  # no _COMPLETE marker
    with pytest.raises(ValueError, match="_COMPLETE"):
        storage.download_dir(storage.join(root, "half"), tmp_path / "scratch")


def test_check_writable_passes_on_a_writable_location_and_leaves_nothing(root):
    storage.check_writable(storage.join(root, "out"))
    assert storage.list_files(root) == []


def test_check_writable_names_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write a read-only folder (root)")
        with pytest.raises(ValueError, match="not writable"):
            storage.check_writable(ro / "out")
    finally:
        ro.chmod(0o700)


def test_check_writable_names_a_location_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        storage.check_writable(tmp_path / "file" / "out")


@pytest.mark.cluster
def test_check_writable_names_an_unreachable_s3_endpoint(monkeypatch):
    for k, v in DUMMY_AWS.items():
        monkeypatch.setenv(k, v)
    from servers import free_port

    uri = s3_uri(f"http://127.0.0.1:{free_port()}", "rdistill")  # nothing listens there
    with pytest.raises(ValueError, match="not writable"):
        storage.check_writable(uri)


@pytest.mark.cluster
def test_check_writable_names_a_missing_bucket_without_creation(s3):
    uri = s3_uri(s3, "no-such-bucket").replace("&allow_bucket_creation=true", "")
    with pytest.raises(ValueError, match="no-such-bucket"):
        storage.check_writable(uri)


def test_local_copy_is_the_path_itself_for_a_local_location(tmp_path):
    assert storage.local_copy(str(tmp_path / "run")) == str(tmp_path / "run")


def test_local_copy_of_a_uri_downloads_a_finished_folder_once_per_version(tmp_path, monkeypatch):
    monkeypatch.setenv("RDISTILL_SCRATCH", str(tmp_path / "scratch"))
    src = tmp_path / "src"
    (src / "ckpt").mkdir(parents=True)
    (src / "ckpt" / "w.bin").write_bytes(b"one")
    location = (tmp_path / "store" / "run").as_uri()  # file:///...: a URI, as s3:// would be
    with pytest.raises(ValueError, match="no _COMPLETE marker"):
        storage.local_copy(location)
    storage.upload_dir(src, location)
    copy = storage.local_copy(location)
    assert copy.startswith(str(tmp_path / "scratch")) and open(f"{copy}/ckpt/w.bin", "rb").read() == b"one"
    os.remove(f"{copy}/ckpt/w.bin")  # an unchanged marker: the copy is reused as it is
    assert storage.local_copy(location) == copy and not os.path.exists(f"{copy}/ckpt/w.bin")
    (src / "ckpt" / "w.bin").write_bytes(b"two!")  # a new version in storage: fetched again
    storage.upload_dir(src, location)
    assert open(f"{storage.local_copy(location)}/ckpt/w.bin", "rb").read() == b"two!"
