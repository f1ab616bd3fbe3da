"""Finished cells kept in storage, one file each, so that a stopped matrix runs only the cells it has not finished.

    key = cell_key(cell, data, "small", epochs=None, teacher=None, set_fingerprint=manifest.fingerprint())
    kept = load_kept(folder, {i: key ...})      # index -> CellResult, for the cells found
    keep_result(folder, key, result)             # as each cell finishes

A cell's file is named by the cell (readable) and a hash of everything its result depends on: the cell, the
set's fingerprint (its generator, classes, IPC and configuration; not its path alone), the data, the protocol
and its epochs, the teacher. A set sampled again differently, or other epochs, is another file, never a stale
hit. The folder is a local folder or a storage URI (rdistill.storage), so a cluster's cells outlive its nodes.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import astuple

from rdistill import storage
from rdistill.evaluate.cells import Cell, CellResult, DataSpec


def cell_key(cell: Cell, data: DataSpec, protocol: str, epochs: int | None, teacher: str | None,
             set_fingerprint: str) -> str:
    """The cell's file name: <method>-ipc<N>-<student>-seed<K>-<hash>.pkl."""
    digest = hashlib.sha256(repr((astuple(cell), astuple(data), protocol, epochs, teacher,
                                  set_fingerprint)).encode()).hexdigest()[:12]
    method = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", cell.method)  # minimax[r=off] -> minimax_r=off_
    ipc = "all" if cell.ipc is None else f"ipc{cell.ipc}"
    return f"{method}-{ipc}-{cell.student}-seed{cell.seed}-{digest}.pkl"


def load_kept(folder, keys: dict[int, str]) -> dict[int, CellResult]:
    """The results already kept in `folder`, by the index of their key; an unreadable file counts as not kept."""
    present = set(storage.list_files(folder))  # one listing, not one request per cell
    kept = {}
    for i, key in keys.items():
        if key in present:
            try:
                kept[i] = pickle.loads(storage.read_bytes(storage.join(folder, key)))
            except (pickle.UnpicklingError, EOFError, AttributeError, TypeError):
                continue  # written by another version of CellResult: run the cell again
    return kept


def keep_result(folder, key: str, result: CellResult) -> None:
    """Write one finished cell (its student's weights too, when it carries them: the feature network)."""
    storage.write_bytes(storage.join(folder, key), pickle.dumps(result))
