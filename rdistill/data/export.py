"""A surrogate set out of rdistill: an ImageFolder tree `<class>/<index:05d>.png` in a folder or in storage.

    n = export_imagefolder("sets/minimax", "s3://bucket/exports/minimax")   # or a local folder

torchvision's ImageFolder, timm and most training scripts read the tree as it is. Each image is published
atomically (rdistill.storage), so a reader never sees half a PNG; a rerun of the same set writes the same bytes.
"""

from __future__ import annotations

import posixpath

from rdistill import storage
from rdistill.data.shards import read_surrogate, safe_name

EXPORT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what an ImageFolder reader would take as images


def export_imagefolder(folder, out, overwrite: bool = False) -> int:
    """Write out/<class_name>/<index:05d>.png (names made path-safe) for every image; returns the count.

    Images already in `out` must be this set's (a rerun writes the same files); others (another export, a
    user's own) raise ValueError unless `overwrite`, which deletes them first: `out` then holds this set."""
    s = read_surrogate(folder)
    dirs = {k: safe_name(c) for k, c in enumerate(s.classes)}
    if len(set(dirs.values())) != len(dirs):
        raise ValueError(f"class names collide once made path-safe: {dirs}")
    files = {f"{dirs[k]}/{i:05d}.png": png for png, k, i in zip(s.png, s.labels.tolist(), s.indices.tolist())}
    others = [rel for rel in images_in(out) if files.get(rel) != storage.read_bytes(storage.join(out, rel))]
    if others and not overwrite:
        raise ValueError(f"{out} holds {len(others)} images of another set (e.g. {storage.join(out, others[0])}): "
                         "pass --overwrite (overwrite=True) to replace them, or choose another --out")
    for rel in others:
        storage.delete(storage.join(out, rel))
    for rel, png in files.items():
        storage.write_bytes(storage.join(out, rel), png)
    return len(s)


def images_in(out) -> list[str]:
    """The images of an ImageFolder tree at `out` (class/name paths relative to it)."""
    return [rel for rel in storage.list_files(out)
            if rel.count("/") == 1 and posixpath.splitext(rel)[1].lower() in EXPORT_IMAGE_SUFFIXES]
