"""ImageNet-1K class identity: the sorted WNID list, WNID -> DiT label, the paper's 10-class subsets.

DiT's class label of a WNID is its index in the sorted list of the 1000 ImageNet-1K WNIDs (the
torchvision / timm order). rdistill derives it explicitly from the WNID, never from folder order: a
folder holding only 10 WNIDs would otherwise get labels 0..9 and be sampled as the wrong classes
(SPEC.md section 3).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_TIMM_INFO = "timm.data._info"  # timm ships the ImageNet synset lists as package data
_WNID = re.compile(r"n\d{8}")


def _read_timm_info(filename: str) -> list[str]:
    text = resources.files(_TIMM_INFO).joinpath(filename).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _load_wnids() -> tuple[str, ...]:
    wnids = tuple(line.strip() for line in _read_timm_info("imagenet_synsets.txt"))
    if len(wnids) != 1000 or list(wnids) != sorted(wnids) or len(set(wnids)) != 1000:
        raise ValueError(f"timm's imagenet_synsets.txt is not 1000 sorted unique WNIDs ({len(wnids)} lines)")
    return wnids


IMAGENET_WNIDS: tuple[str, ...] = _load_wnids()  # the 1000 ImageNet-1K WNIDs, sorted
_LABEL_OF = {w: i for i, w in enumerate(IMAGENET_WNIDS)}

# SPEC.md section 4 (the paper's subsets); the class order of a subset is this order.
SUBSETS: dict[str, tuple[str, ...]] = {
    "imagewoof": (
        "n02096294", "n02093754", "n02111889", "n02088364", "n02086240",
        "n02089973", "n02087394", "n02115641", "n02099601", "n02105641",
    ),
    "imagenette": (
        "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
        "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
    ),
    "imageidc": (
        "n02869837", "n01749939", "n02488291", "n02107142", "n13037406",
        "n02091831", "n04517823", "n04589890", "n03062245", "n01773797",
    ),
}  # fmt: skip


def is_imagenet_wnid(name: str) -> bool:
    """Whether `name` is one of the 1000 ImageNet-1K WNIDs."""
    return name in _LABEL_OF


def imagenet_label(wnid: str) -> int:
    """The DiT class label of an ImageNet-1K WNID: its index in the sorted WNID list."""
    if wnid not in _LABEL_OF:
        kind = "a WNID but not one of ImageNet-1K's 1000" if _WNID.fullmatch(wnid) else "not a WNID (nXXXXXXXX)"
        raise ValueError(f"{wnid!r} is {kind}")
    return _LABEL_OF[wnid]


@functools.cache
def _lemmas() -> dict[str, str]:
    pairs = (line.split("\t", 1) for line in _read_timm_info("imagenet_synset_to_lemma.txt"))
    return {w.strip(): lemma.strip() for w, lemma in pairs}


def class_name(wnid: str) -> str:
    """A human-readable name for plots: the first lemma of the synset ("n02099601" -> "golden retriever")."""
    imagenet_label(wnid)  # raises for an unknown WNID
    return _lemmas()[wnid].split(",")[0].strip()
