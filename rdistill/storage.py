"""Storage: the one location where a stage leaves what the next stage reads, through pyarrow.fs.

A location is a local path ("runs/digits", "/data/runs") or a URI that `pyarrow.fs.FileSystem.from_uri`
understands: s3://bucket/prefix, gs://bucket/prefix, file:///abs/path, hdfs://..., with the filesystem's
options as a query (`s3://b/runs?endpoint_override=http://127.0.0.1:9000&scheme=http&allow_bucket_creation=true`).
Local paths are made absolute with os.path.abspath; a URI is never passed through Path.resolve.

Publishing is atomic on every filesystem: a file is written under a temporary name beside its final one
(`.tmp-<random>-<name>`) and then moved into place (a rename on a local disk, a server-side copy on an
object store), so a reader either finds the finished object or nothing. A folder uploaded with
`upload_dir` is finished when its `_COMPLETE` marker exists; `download_dir` refuses a folder without one.
Node-local disk is scratch: `download_dir` brings a stored folder there, `upload_dir` publishes one.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from urllib.parse import urlsplit, urlunsplit

from pyarrow import fs as pafs

COMPLETE = "_COMPLETE"  # written last by upload_dir: {relative path: size in bytes}
TMP_PREFIX = ".tmp-"  # files being written; never listed, never taken for finished ones


def is_uri(location) -> bool:
    """True for scheme://... ; a Windows-style or plain path is not a URI."""
    return "://" in str(location)


def resolve(location) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI; a URI that pyarrow cannot open -> ValueError."""
    location = os.fspath(location)
    if not location:
        raise ValueError("storage location is empty: give a folder or a URI such as s3://bucket/prefix")
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    try:
        filesystem, path = pafs.FileSystem.from_uri(location)
    except (ValueError, OSError, TypeError) as e:  # ArrowInvalid is a ValueError
        raise ValueError(f"cannot open storage location {location!r}: {e}") from None
    return filesystem, path.rstrip("/")


def join(location, *parts: str) -> str:
    """location/part/...: for a URI the parts go into its path, before any ?query."""
    location = os.fspath(location)
    parts = [p.strip("/") for p in parts if p]
    if not is_uri(location):
        return os.path.join(location, *parts)
    u = urlsplit(location)
    return urlunsplit(u._replace(path=posixpath.join(u.path or "/", *parts)))


def _tmp_name(path: str) -> str:
    head, name = posixpath.split(path)
    return posixpath.join(head, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def _publish(filesystem: pafs.FileSystem, data: bytes, path: str) -> None:
    """Write to a temporary name beside `path`, then move it onto `path` (atomic for readers)."""
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    tmp = _tmp_name(path)
    try:
        with filesystem.open_output_stream(tmp) as f:
            f.write(data)
        filesystem.move(tmp, path)
    except BaseException:
        _delete_quietly(filesystem, tmp)
        raise


def _delete_quietly(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except (OSError, FileNotFoundError):
        pass


def write_bytes(location, data: bytes) -> None:
    """Publish `data` at `location` atomically (a reader never sees part of it)."""
    filesystem, path = resolve(location)
    _publish(filesystem, bytes(data), path)


def write_text(location, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def read_bytes(location) -> bytes:
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{location!r} does not exist in storage") from None


def read_text(location) -> str:
    return read_bytes(location).decode("utf-8")


def read_json(location):
    """The JSON value at `location`; {} if there is none yet."""
    return json.loads(read_text(location)) if exists(location) else {}


def write_json(location, obj) -> None:
    """`obj` as indented JSON with sorted keys, published atomically."""
    write_text(location, json.dumps(obj, indent=1, sort_keys=True))


def exists(location) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def list_files(location) -> list[str]:
    """Finished files under `location`, as sorted paths relative to it (temporary files left out)."""
    filesystem, path = resolve(location)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    rel = [posixpath.relpath(i.path, path) for i in infos if i.type == pafs.FileType.File]
    return sorted(r for r in rel if not posixpath.basename(r).startswith(TMP_PREFIX))


def delete(location) -> None:
    """Remove a file or a folder (and everything under it); a missing one is fine."""
    filesystem, path = resolve(location)
    kind = filesystem.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        filesystem.delete_dir(path)
    elif kind == pafs.FileType.File:
        filesystem.delete_file(path)


def check_writable(location) -> None:
    """Before any work: create `location`, write and delete a probe; ValueError naming it if that fails."""
    filesystem, path = resolve(location)
    probe = posixpath.join(path, f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:12]}")
    try:
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(probe) as f:
            f.write(b"rdistill")
        filesystem.delete_file(probe)
    except (OSError, ValueError) as e:
        raise ValueError(f"storage location {location!r} is not writable: {e}; give a folder or URI this "
                         "process can write (for S3: credentials, endpoint_override, an existing bucket or "
                         "allow_bucket_creation=true)") from None


def upload_dir(local_dir, location) -> list[str]:
    """Publish every file of a local folder under `location`, each atomically, then the `_COMPLETE` marker.

    Returns the relative paths uploaded. A reader that sees the marker sees every file."""
    filesystem, path = resolve(location)
    root = os.path.abspath(local_dir)
    sizes = {}
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            src = os.path.join(folder, name)
            rel = os.path.relpath(src, root).replace(os.sep, "/")
            if rel == COMPLETE:
                continue
            with open(src, "rb") as f:
                data = f.read()
            _publish(filesystem, data, posixpath.join(path, rel))
            sizes[rel] = len(data)
    _publish(filesystem, json.dumps(sizes, sort_keys=True).encode(), posixpath.join(path, COMPLETE))
    return sorted(sizes)


def is_complete(location) -> bool:
    """True once `upload_dir` has finished publishing the folder at `location`."""
    return exists(join(location, COMPLETE))


def download_dir(location, local_dir) -> list[str]:
    """Copy a folder published by `upload_dir` to node-local scratch; ValueError if it is unfinished.

    Returns the relative paths downloaded; each file's size is checked against the marker."""
    filesystem, path = resolve(location)
    try:
        sizes = json.loads(read_bytes(join(location, COMPLETE)))
    except FileNotFoundError:
        raise ValueError(f"{location!r} has no {COMPLETE} marker: it is not a finished upload "
                         "(still being written, or written by something else)") from None
    for rel, size in sorted(sizes.items()):
        with filesystem.open_input_stream(posixpath.join(path, rel)) as f:
            data = f.read()
        if len(data) != size:
            raise ValueError(f"{join(location, rel)!r} has {len(data)} bytes, its marker says {size}")
        dst = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = f"{dst}{TMP_PREFIX}{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    return sorted(sizes)


# Node-local scratch:


def scratch_root() -> str:
    """This node's scratch folder: RDISTILL_SCRATCH, else <TMPDIR>/rdistill-scratch (never shared, never kept)."""
    import tempfile

    root = os.environ.get("RDISTILL_SCRATCH") or os.path.join(tempfile.gettempdir(), "rdistill-scratch")
    os.makedirs(root, exist_ok=True)
    return root


def scratch_for(location, kind: str = "copy") -> str:
    """A scratch folder of this node named after `location` (the same location -> the same folder)."""
    import hashlib

    key = hashlib.sha256(os.fspath(location).encode()).hexdigest()[:16]
    return os.path.join(scratch_root(), kind, key)


def local_copy(location) -> str:
    """A local folder holding what is stored at `location`: the path itself for a local location; for a URI,
    a download of the finished folder (its `_COMPLETE` marker) into this node's scratch, fetched again only
    when the stored marker changed. Read-only use: the next stage publishes to storage, not here."""
    if not is_uri(location):
        return os.path.abspath(os.path.expanduser(os.fspath(location)))
    folder = scratch_for(location)
    marker = read_bytes(join(location, COMPLETE)) if exists(join(location, COMPLETE)) else None
    if marker is None:
        raise ValueError(f"{location!r} has no {COMPLETE} marker: it is not a finished folder in storage "
                         "(publish it with rdistill.storage.upload_dir, or wait for its writer)")
    mine = os.path.join(folder, COMPLETE)
    if os.path.isfile(mine) and open(mine, "rb").read() == marker:
        return folder
    import shutil

    staging = f"{folder}{TMP_PREFIX}{uuid.uuid4().hex[:8]}"
    download_dir(location, staging)
    with open(os.path.join(staging, COMPLETE), "wb") as f:
        f.write(marker)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError:  # another process of this node placed its copy first: use that one
        shutil.rmtree(staging, ignore_errors=True)
    return folder
