import os
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import torch

from rdistill.generate.checkpoint import latest_checkpoint, weights_hash
from rdistill.data.shards import MANIFEST_NAME, Manifest, decode_png, read_surrogate, shard_name
from rdistill.generate.sampling import SampleJob, generate_chunk, plan, resolve_classes, run_sampling

IPC, STEPS = 3, 4  # tiny: 10 digit classes x 3 images x 4 steps


def job(run_dir, out, **kw) -> SampleJob:
    kw = {"ipc": IPC, "steps": STEPS, "chunk_size": 2, "seed": 7, **kw}
    return SampleJob(run_dir=str(run_dir), out=str(out), **kw)


def rows(folder) -> list[dict]:
    t = ds.dataset(str(folder), format="parquet").to_table()  # the folder as any Parquet reader sees it
    return sorted(t.to_pylist(), key=lambda r: (r["label"], r["index"]))


class Counter:
    """chunk_fn that counts (and optionally stops after `fail_after`) calls of generate_chunk."""

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = [], fail_after

    def __call__(self, j, task, source=None):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls.append((task.label, task.chunk))
        return generate_chunk(j, task, source)


@pytest.fixture(scope="module")
def full_set(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sets") / "full"
    run_sampling(job(run_dir, out), progress=False)
    return out


def test_plan_covers_every_index_once_in_chunks(run_dir):
    from rdistill.generate.checkpoint import RunMeta

    tasks = plan(job(run_dir, "x", ipc=5, classes=("3", 1)), RunMeta.load(run_dir))
    assert [(t.label, t.chunk, list(t.indices)) for t in tasks] == [
        (1, 0, [0, 1]), (1, 1, [2, 3]), (1, 2, [4]), (3, 0, [0, 1]), (3, 1, [2, 3]), (3, 2, [4])]


def test_resolve_classes_prefers_names_and_names_the_unknown():
    assert resolve_classes(["b", "0", 2], ["a", "b", "c"]) == [0, 1, 2]
    assert resolve_classes(["1"], ["1", "0"]) == [0]  # the class named "1", not index 1
    with pytest.raises(ValueError, match=r"\['z', 5\]"):
        resolve_classes(["a", "z", 5], ["a", "b", "c"])


def test_in_process_sampling_writes_every_image_once(run_dir, full_set):
    r = rows(full_set)
    m = Manifest.load(full_set)
    assert [(x["label"], x["index"]) for x in r] == [(k, i) for k in range(10) for i in range(IPC)]
    assert all(x["class_name"] == m.classes[x["label"]] and x["seed"] == 7 for x in r)
    assert {x["source"] for x in r} == {m.source} == {weights_hash(latest_checkpoint(run_dir))}
    assert decode_png(r[0]["image"]["bytes"]).shape == (1, 8, 8)  # digits: grayscale 8x8
    assert m.method == "dit" and m.ipc == IPC and m.counts == {str(k): IPC for k in range(10)}
    assert sorted(m.shards) == sorted(shard_name(k, c) for k in range(10) for c in (0, 1))
    assert m.config["sampling"]["steps"] == STEPS and m.config["run"]["train"]["method"] == "pretrain"
    assert len({x["image"]["bytes"] for x in r}) > 1  # images differ


def test_same_job_gives_identical_shards_and_subsets_keep_their_noise(run_dir, full_set, tmp_path):
    out = tmp_path / "subset"
    run_sampling(job(run_dir, out, classes=("3", "8")), progress=False)
    assert sorted(Manifest.load(out).counts) == ["3", "8"]
    for name in (shard_name(3, 0), shard_name(8, 1)):
        assert (out / name).read_bytes() == (full_set / name).read_bytes()


def test_ipc_is_a_prefix_of_a_larger_ipc(run_dir, full_set, tmp_path):
    small = tmp_path / "ipc2"
    run_sampling(job(run_dir, small, ipc=2, classes=("0", "5")), progress=False)
    a, b = read_surrogate(small), read_surrogate(full_set, ipc=2, classes=["0", "5"])
    assert a.png == b.png and torch.equal(a.labels, b.labels)


def test_images_do_not_depend_on_batch_or_chunk_size(run_dir, full_set, tmp_path):
    other = tmp_path / "b1"
    run_sampling(job(run_dir, other, classes=("0", "5"), batch_size=1, chunk_size=3), progress=False)
    a, b = read_surrogate(other), read_surrogate(full_set, classes=["0", "5"])
    assert a.png == b.png and torch.equal(a.labels, b.labels)


def test_resume_rewrites_only_missing_and_corrupt_shards(run_dir, full_set, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(full_set, out)
    os.utime(out / shard_name(0, 0), (1, 1))  # an old mtime marks files that must stay untouched
    (out / shard_name(4, 1)).unlink()
    (out / shard_name(6, 0)).write_bytes(b"PAR1 truncated")  # a corrupt shard
    counter = Counter()
    run_sampling(job(run_dir, out), progress=False, chunk_fn=counter)
    assert sorted(counter.calls) == [(4, 1), (6, 0)]
    assert os.stat(out / shard_name(0, 0)).st_mtime == 1
    assert rows(out) == rows(full_set)


def test_an_interrupted_run_resumes_where_it_stopped(run_dir, full_set, tmp_path):
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_sampling(job(run_dir, out), progress=False, chunk_fn=Counter(fail_after=3))
    assert len(Manifest.load(out).shards) == 3  # each finished shard was recorded at once
    counter = Counter()
    run_sampling(job(run_dir, out), progress=False, chunk_fn=counter)
    assert len(counter.calls) == 20 - 3
    assert rows(out) == rows(full_set) and Manifest.load(out).shards == Manifest.load(full_set).shards


def test_another_sets_folder_is_refused_unless_overwrite(run_dir, full_set, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(full_set, out)
    with pytest.raises(ValueError, match="another run"):
        run_sampling(job(run_dir, out, seed=8, classes=("1",)), progress=False)
    m = run_sampling(job(run_dir, out, seed=8, classes=("1",), overwrite=True), progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, shard_name(1, 0), shard_name(1, 1)])
    assert m.config["sampling"]["seed"] == 8


@pytest.mark.parametrize("field, value, match", [
    ("ipc", 0, "ipc = 0"), ("steps", 0, "steps = 0"), ("method", "euler", "method = 'euler'"),
    ("chunk_size", 0, "chunk_size"), ("workers", -1, "workers"), ("classes", ("0", "cat", "11"), r"\['cat', '11'\]"),
])
def test_bad_jobs_fail_before_any_work(run_dir, tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        run_sampling(replace(job(run_dir, tmp_path / "o"), **{field: value}), progress=False)
    assert not (tmp_path / "o").exists()


def test_a_run_without_checkpoint_or_no_run_is_refused(run_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("checkpoints", "latents"))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run_sampling(job(bare, tmp_path / "o"), progress=False)
    with pytest.raises(FileNotFoundError, match="model.json"):
        run_sampling(job(tmp_path, tmp_path / "o"), progress=False)


def test_cli_sample_and_export(run_dir, tmp_path, capsys):
    from rdistill import cli

    argv = ["sample", "--run", str(run_dir), "--ipc", "2", "--out", str(tmp_path / "s"), "--steps", "2",
            "--classes", "2", "--guidance-channels", "all", "--no-progress"]
    assert cli.main(argv) == 0
    assert cli.main(["export", "--surrogate", str(tmp_path / "s"), "--out", str(tmp_path / "f")]) == 0
    assert cli.main([*argv[:3], "--ipc", "0", "--out", str(tmp_path / "t")]) == 2
    assert sorted(p.name for p in (tmp_path / "f" / "2").iterdir()) == ["00000.png", "00001.png"]
    m = Manifest.load(tmp_path / "s")
    assert m.config["sampling"]["guidance_channels"] is None and m.counts == {"2": 2}
    assert "ipc = 0 is invalid" in capsys.readouterr().err


@pytest.mark.parametrize("keys, name", [
    (["train.method=pretrain"], "dit"), (["train.method=difffit", "train.lambda_d=0.5"], "difffit"),
    (["train.method=minimax"], "minimax"), (["train.method=minimax", "train.diversity=off"], "minimax[d=off]"),
    (["train.method=minimax", "train.representativeness=mean", "train.diversity=mean"], "minimax[r=mean,d=mean]"),
    (["train.method=minimax", "train.lambda_d=0.04"], "minimax[ld=0.04]"),
    (["train.method=minimax", "train.diversity=off", "train.lambda_d=0.04"], "minimax[d=off]"),  # its weight: off too
    (["train.method=minimax", "train.representativeness=mean", "train.diversity=off", "train.memory_size=8"],
     "minimax[r=mean,d=off]"),  # the mean of the batch reads no memory
    (["train.method=minimax", "train.lambda_r=0.01", "train.memory_size=128"], "minimax[lr=0.01,nm=128]"),
    (["train.method=minimax", "train.centred=true", "train.diversity=mean"], "minimax[d=mean,centred]"),
    (["train.method=difffit", "train.centred=true"], "difffit")])
def test_a_sets_method_names_what_differs_from_the_papers_criteria(keys, name):
    from rdistill.config import load_config
    from rdistill.generate.sampling import set_method

    assert set_method(load_config(None, keys)) == name
