"""A Ray Train run's checkpoints as run folders: what a rank reports, what a node restores, what is published.

Rank 0 reports a `package` (the run files and its checkpoint folder), every other rank its own minimax
memories (`package_memory`); Ray Train merges them into one checkpoint in storage. A node `restore`s the
newest one into its run folder before training; a run stored at a URI is `publish`ed from the Result's
checkpoint as a finished folder (`_COMPLETE`) that the next stage reads with storage.local_copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rdistill.generate import checkpoint as ckpt_io

RUN_FILES = ("config.yaml", "model.json", "losses.csv")  # what a node needs besides the checkpoint folder


def publish(checkpoint, location: str) -> None:
    """The run folder held by a Ray Train checkpoint (a `package`, every rank's memories merged in) -> storage,
    as a finished folder (`_COMPLETE`) the next stage reads with storage.local_copy."""
    from rdistill import storage

    with checkpoint.as_directory() as d:
        storage.upload_dir(d, location)


def step_of(ckpt: Path | None) -> int | None:
    return None if ckpt is None else json.loads((Path(ckpt) / "state.json").read_text())["step"]


def package(ckpt: Path, tmp: str) -> str:
    """A folder laid out like a run folder holding one checkpoint: what `restore` needs on a fresh node."""
    run_dir, out = Path(ckpt).parent.parent, Path(tmp)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, out / name)
    shutil.copytree(ckpt, out / ckpt_io.CKPT_DIR / Path(ckpt).name)
    return tmp


def package_memory(memory_file: Path, step: int, rank: int, tmp: str) -> str:
    """Rank `rank`'s part of a checkpoint: its memories at checkpoints/step-N/memory-rank<rank>.safetensors."""
    folder = ckpt_io.checkpoint_dir(Path(tmp), step)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(memory_file, folder / ckpt_io.rank_memory_name(rank))
    return tmp


def restore_published(location: str, run_dir: Path) -> None:
    """A run stored at a URI and not known to this Ray Train run (a new `name`, or resumed later): its
    published folder seeds the node's scratch copy, if it is newer."""
    from rdistill import storage

    if not storage.is_uri(location) or not storage.is_complete(location):
        return
    folder = Path(storage.local_copy(location))
    theirs, mine = ckpt_io.latest_checkpoint(folder), ckpt_io.latest_checkpoint(run_dir)
    if theirs is None or (mine is not None and step_of(mine) >= step_of(theirs)):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (folder / name).exists():
            shutil.copy2(folder / name, run_dir / name)
    shutil.copytree(theirs, ckpt_io.checkpoint_dir(run_dir, step_of(theirs)), dirs_exist_ok=True)


def restore(checkpoint, run_dir: Path, size: int = 1, scratch: bool = False) -> None:
    """Copy a Ray Train checkpoint (a `package`, with every rank's memories) into run_dir unless run_dir's own
    newest is newer and holds all `size` ranks' memories (at the same step, files missing here, such as other
    ranks' memories, are added). `scratch` (a run stored at a URI): the node's folder is only a cache, and
    checkpoints Ray Train does not know of are dropped (another node's rank may lack their memories)."""
    theirs_step = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            theirs = ckpt_io.latest_checkpoint(d)
            theirs_step = step_of(theirs)
    mine = ckpt_io.latest_checkpoint(run_dir)
    if mine is not None and (scratch or not has_every_rank(mine, size)) and step_of(mine) > (theirs_step or 0):
        drop_checkpoints_after(run_dir, theirs_step or 0)
        mine = ckpt_io.latest_checkpoint(run_dir)
    if checkpoint is None:
        return
    with checkpoint.as_directory() as d:
        theirs = ckpt_io.latest_checkpoint(d)
        if theirs is None or (mine is not None and step_of(mine) > step_of(theirs)):
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (Path(d) / name).exists():
                shutil.copy2(Path(d) / name, run_dir / name)
        shutil.copytree(theirs, ckpt_io.checkpoint_dir(run_dir, step_of(theirs)), dirs_exist_ok=True)


def has_every_rank(ckpt: Path, size: int) -> bool:
    """Whether ranks 1..size-1 each find their memories of checkpoint `ckpt` (rank 0's are in it)."""
    step = step_of(ckpt)
    return all((Path(ckpt) / ckpt_io.rank_memory_name(r)).is_file()
               or ckpt_io.rank_memory_path(Path(ckpt).parent.parent, step, r).is_file() for r in range(1, size))


def drop_checkpoints_after(run_dir: Path, step: int) -> None:
    """Remove run_dir's checkpoint folders of steps after `step` (a resumed run writes them again)."""
    for folder in (Path(run_dir) / ckpt_io.CKPT_DIR).glob("step-*"):
        if folder.name[5:].isdigit() and int(folder.name[5:]) > step:
            shutil.rmtree(folder, ignore_errors=True)
