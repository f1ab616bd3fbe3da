"""What a new user meets on day one: every bad input refused in one line (exit 2) before any work, nothing
left behind; Ctrl-C / SIGTERM exit 130 / 143 keeping finished shards; a local Ray on loopback only.

The CLI runs as a subprocess wherever the exit code is the point."""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from rdistill.generate.checkpoint import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def cli(*argv, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdistill.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env(), cwd=cwd, timeout=timeout)


def refused(p: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 with one line on stderr (no traceback) holding `words`; returns that line."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert lines[-1].startswith("rdistill ") and "error:" in lines[-1], p.stderr
    for w in words:
        assert w in lines[-1], lines[-1]
    return lines[-1]


def write_images(folder: Path, classes=("a", "b"), per_class=4, sizes=((12, 12),)) -> Path:
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            Image.new("RGB", (w, h), (40 * i, 100, 200)).save(folder / c / f"{i}.png")
    return folder


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# Start-up:


def test_help_and_argument_errors_import_no_heavy_library():
    code = ("import sys; from rdistill.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'diffusers', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True)
    assert out.stdout.strip() == "[]"
    p = cli("sample", "--ipc", "x")
    assert p.returncode == 2 and "invalid int value: 'x'" in p.stderr


def test_sample_defaults_are_the_samplers():
    from rdistill.commands import sample as command
    from rdistill.generate import sampler

    assert (command.DEFAULT_STEPS, command.DEFAULT_GUIDANCE, command.DIT_GUIDED_CHANNELS, command.DEFAULT_BATCH_SIZE) == (
        sampler.DEFAULT_STEPS, sampler.DEFAULT_GUIDANCE, sampler.DIT_GUIDED_CHANNELS, sampler.DEFAULT_BATCH_SIZE)


# Configs:


@pytest.mark.parametrize("text, words", [
    ("- train\n- data\n", ("holds a YAML list, not a mapping",)),
    ("0.001\n", ("holds a YAML float, not a mapping",)),
    ("train: {lr: 1e-4\n", ("is not valid YAML (line 2",)),
])
def test_a_config_that_is_no_mapping_is_one_line(tmp_path, text, words):
    (tmp_path / "run.yaml").write_text(text)
    p = cli("pretrain", "--config", tmp_path / "run.yaml", "--out", tmp_path / "out")
    refused(p, str(tmp_path / "run.yaml"), *words)
    assert not (tmp_path / "out").exists()


def test_scientific_notation_is_a_float(tmp_path):
    from rdistill.config import load_config

    (tmp_path / "run.yaml").write_text("train:\n  lr: 1e-4\n  lambda_d: 8E-3\n")
    cfg = load_config(tmp_path / "run.yaml", ["train.lambda_r=2e-3", "train.weight_decay=-1.5e+1", "out=1e5"])
    assert (cfg.train.lr, cfg.train.lambda_d, cfg.train.lambda_r) == (1e-4, 8e-3, 2e-3)
    assert cfg.train.weight_decay == -15.0 and cfg.out == "1e5"  # a string field keeps its text


# Devices:


@no_cuda
@pytest.mark.parametrize("command", ["pretrain", "finetune", "sample", "evaluate"])
def test_cuda_without_cuda_is_one_line_in_every_command(command, run_dir, tmp_path):
    argv = {"pretrain": ["--dataset", "digits", "--out", tmp_path / "o"],
            "finetune": ["--dataset", "digits", "--init", run_dir, "--out", tmp_path / "o"],
            "sample": ["--run", run_dir, "--ipc", 1, "--out", tmp_path / "o"],
            "evaluate": ["--dataset", "digits", "--full", "--out", tmp_path / "o"]}[command]
    refused(cli(command, *argv, "--device", "cuda"), "--device", "'cuda'", "CUDA is not available")
    assert not (tmp_path / "o").exists()


# Base weights and checkpoints:


def test_a_diffusers_folder_without_weights_is_named(run_dir, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"_class_name": "DiTTransformer2DModel", "sample_size": 8}))
    refused(cli("finetune", "--dataset", "digits", "--init", base, "--out", tmp_path / "o"), str(base), "no weights")
    assert not (tmp_path / "o").exists()


def test_a_pickled_pt_is_not_a_plain_state_dict(tmp_path):
    from rdistill.models.loading import load_base

    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "when": datetime.date(2026, 1, 1)}, path)
    line = refused(cli("convert-dit", "--ckpt", path, "--out", tmp_path / "o"), str(path), "not a plain state_dict",
                   "torch.save(model.state_dict()")
    assert len(line) < 400
    with pytest.raises(ValueError, match="not a plain state_dict"):
        load_base(path)


def test_sample_names_a_checkpoint_without_its_ema(run_copy, tmp_path):
    (latest_checkpoint(run_copy) / "ema.safetensors").unlink()
    refused(cli("sample", "--run", run_copy, "--ipc", 1, "--out", tmp_path / "s"), "lacks ema.safetensors")
    assert not (tmp_path / "s").exists()


def test_overwrite_errors_name_the_flag(run_dir, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "class-00000-chunk-000.parquet").write_bytes(b"x")
    refused(cli("sample", "--run", run_dir, "--ipc", 1, "--steps", 2, "--out", tmp_path / "s"), "--overwrite")


# Fine-tuning:


def test_a_refused_finetune_leaves_nothing_behind(run_dir, tmp_path):
    from rdistill.config import load_config
    from rdistill.generate.finetune import train

    refused(cli("finetune", "--dataset", "digits", "--init", run_dir, "--image-size", 16, "--out", tmp_path / "o"),
            "--image-size 16", "trained at 8")
    assert not (tmp_path / "o").exists()
    cfg = load_config(None, ["data.name=digits", "data.image_size=16", f"model.init={run_dir}", "train.max_steps=1",
                             f"out={tmp_path / 'lib'}"])
    with pytest.raises(ValueError, match="latents"):  # the library refuses it before writing the cache too
        train(cfg, progress=False)
    assert not (tmp_path / "lib").exists()


def test_finetune_takes_the_image_size_of_its_base(tmp_path):
    data = write_images(tmp_path / "data", sizes=((16, 16), (20, 24)))  # mixed: the folder alone says 256
    base = tmp_path / "base"
    p = cli("pretrain", "--dataset", f"imagefolder:{data}", "--image-size", 8, "--max-steps", 1, "--batch-size", 2,
            "--out", base, "--no-progress")
    assert p.returncode == 0, p.stderr
    p = cli("finetune", "--dataset", f"imagefolder:{data}", "--init", base, "--max-steps", 1, "--batch-size", 2,
            "--out", tmp_path / "ft", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert f"image size 8, the size base {base} was trained at" in p.stderr
    assert "image_size: 8" in (tmp_path / "ft" / "config.yaml").read_text()


def test_pretraining_warms_its_ema_up_and_says_when_it_has_not():
    from rdistill.config import TrainConfig
    from rdistill.generate.ema import ema_decay, warn_if_ema_cold

    pre, ft = TrainConfig(method="pretrain", ema_decay=0.999), TrainConfig(method="minimax", ema_decay=0.9999)
    assert [ema_decay(pre, s) for s in (0, 1, 90)] == [1 / 10, 2 / 11, 0.91]
    assert ema_decay(pre, 100_000) == 0.999
    assert ema_decay(ft, 0) == 0.9999  # fine-tuning: the paper's plain EMA from the base
    with pytest.warns(UserWarning, match="before its EMA warmed up"):
        warn_if_ema_cold(pre, 240)
    with pytest.warns(UserWarning, match="still 98% the base model"):
        warn_if_ema_cold(ft, 240)


# Data:


def test_an_image_folder_defaults_to_its_own_size_and_says_so(tmp_path):
    from rdistill.data import load_dataset

    same = write_images(tmp_path / "same")
    mixed = write_images(tmp_path / "mixed", sizes=((12, 12), (30, 20)))
    assert load_dataset(f"imagefolder:{same}").image_size == 12
    assert load_dataset(f"imagefolder:{mixed}").image_size == 256
    p = cli("select", "--dataset", f"imagefolder:{same}", "--method", "random", "--ipc", 1, "--out", tmp_path / "s",
            "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "reading them at 12x12 (--image-size to change)" in p.stderr


def test_export_into_another_export_needs_overwrite(tmp_path):
    data = write_images(tmp_path / "data", per_class=5)
    for name, ipc in (("a", 3), ("b", 2)):
        p = cli("select", "--dataset", f"imagefolder:{data}", "--method", "random", "--ipc", ipc, "--seed", ipc,
                "--out", tmp_path / name, "--no-progress")
        assert p.returncode == 0, p.stderr
    assert cli("export", "--surrogate", tmp_path / "a", "--out", tmp_path / "f").returncode == 0
    assert cli("export", "--surrogate", tmp_path / "a", "--out", tmp_path / "f").returncode == 0  # the same set
    refused(cli("export", "--surrogate", tmp_path / "b", "--out", tmp_path / "f"), "images of another set", "--overwrite")
    assert len(list((tmp_path / "f").glob("*/*.png"))) == 6
    assert cli("export", "--surrogate", tmp_path / "b", "--out", tmp_path / "f", "--overwrite").returncode == 0
    assert len(list((tmp_path / "f").glob("*/*.png"))) == 4


# Evaluation:


def test_evaluate_checks_resolution_and_memory_before_any_work(tmp_path):
    p = cli("select", "--dataset", "digits", "--image-size", 16, "--method", "random", "--ipc", 1,
            "--out", tmp_path / "s16", "--no-progress")
    assert p.returncode == 0, p.stderr
    refused(cli("evaluate", "--surrogate", tmp_path / "s16", "--dataset", "digits", "--workers", 0,
                "--out", tmp_path / "e"), "16x16 images", "read at 8x8", "--image-size 16")
    refused(cli("evaluate", "--surrogate", tmp_path / "s16", "--dataset", "digits", "--image-size", 16,
                "--max-memory", 0.001, "--workers", 0, "--out", tmp_path / "e"),
            "student convnet-3 at 16x16 px, batch 256", "GB per cell", "--image-size")
    assert not (tmp_path / "e").exists()


def test_memory_estimate_grows_with_the_resolution():
    from rdistill.data import load_dataset
    from rdistill.evaluate.cells import TORCH_WORKING_MEMORY, estimate_memory
    from rdistill.models.students import build_student

    small, large = load_dataset("digits", 8), load_dataset("digits", 32)
    a = estimate_memory(build_student("convnet-3", 10, 1, 8), small, 256) - TORCH_WORKING_MEMORY
    b = estimate_memory(build_student("convnet-3", 10, 1, 32), large, 256) - TORCH_WORKING_MEMORY
    assert b > 4 * a > 0  # activations and pixels grow with the pixels (16x here), the weights do not


# Ray:


def test_a_task_killed_for_memory_is_one_line_naming_it():
    from rdistill.distributed.cluster import RAY_ENV_DEFAULTS
    from rdistill.distributed.tasks import describe_call, out_of_memory
    from rdistill.evaluate.cells import Cell

    assert RAY_ENV_DEFAULTS["RAY_task_oom_retries"] == "1"  # not Ray's -1 (forever)
    cell = Cell("minimax", 10, "convnet-3", 0, "/sets/minimax")

    def run_cell(*a):
        return a

    msg = ("Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.1) where the "
           "task (task ID: ab, name=run_cell, pid=7, memory used=21.04GB) was running was 30.1GB / 31.3GB (0.96)")
    e = out_of_memory(describe_call(run_cell, ((cell, "data"), {})), RuntimeError(msg))
    assert "\n" not in str(e)
    for w in ("student='convnet-3'", "ipc=10", "21.04 GB", "30.1GB / 31.3GB", "--image-size", "--workers"):
        assert w in str(e)


def test_a_local_ray_listens_on_loopback_only():
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    code = """
import os, subprocess
from rdistill.distributed.cluster import connect
ray = connect(num_cpus=1)
import psutil  # Ray's own copy
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
tree = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    if any(f"pid={p}," in line for p in tree):
        print(line.split()[3])
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=180)
    assert out.returncode == 0, out.stderr
    listeners = out.stdout.split()
    assert len(listeners) >= 3  # gcs, raylet, worker, agents
    hosts = {a.rpartition(":")[0] for a in listeners}
    assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, listeners


def test_a_local_rays_workers_run_at_the_drivers_priority():
    code = """
import os
from rdistill.distributed.cluster import connect
ray = connect(num_cpus=1)
print(ray.get(ray.remote(lambda: os.nice(0)).remote()))
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=180)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == os.nice(0)  # not Ray's 15


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_sample_keeps_its_shards_and_exits_128_plus_the_signal(run_dir, tmp_path, sig, code):
    from rdistill.data.shards import Manifest

    out = tmp_path / "s"
    p = subprocess.Popen([sys.executable, "-m", "rdistill.cli", "sample", "--run", str(run_dir), "--ipc", "12",
                          "--chunk-size", "1", "--steps", "30", "--workers", "2", "--out", str(out), "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 240
        while not (out / "_manifest.json").is_file() or not Manifest.load(out).shards:  # a shard is recorded
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.5)
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code, err
    assert "rdistill sample: interrupted; rerun the same command to resume" in err.splitlines(), err  # Ray may log after it
    assert "Traceback" not in err
    kept = Manifest.load(out).shards
    assert 0 < len(kept) < 120 and all((out / name).is_file() for name in kept)


# Provenance:


def test_a_finetuned_run_pins_its_base_and_the_manifest_names_it(run_copy, tmp_path):
    from rdistill.config import load_config
    from rdistill.data.shards import Manifest
    from rdistill.generate.checkpoint import RunMeta, weights_hash
    from rdistill.generate.finetune import train
    from rdistill.generate.sampling import SampleJob, run_sampling

    pinned = latest_checkpoint(run_copy)
    cfg = load_config(None, ["data.name=digits", f"model.init={run_copy}", "train.max_steps=1", "train.batch_size=8",
                             f"out={tmp_path / 'ft'}"])
    with pytest.warns(UserWarning, match="EMA"):
        ft = train(cfg, progress=False)
    pin = RunMeta.load(ft).base
    assert pin == {"path": str(run_copy.resolve()), "checkpoint": pinned.name, "sha256": weights_hash(pinned)}
    m = run_sampling(SampleJob(run_dir=str(ft), out=str(tmp_path / "s"), ipc=1, steps=2, classes=("0",)),
                     progress=False)
    assert Manifest.load(tmp_path / "s").config["base"] == pin == m.config["base"]

    newer = pinned.with_name("step-9999999")  # the base trains on: sampling keeps the pinned weights
    shutil.copytree(pinned, newer)
    (pinned / "ema.safetensors").write_bytes((newer / "ema.safetensors").read_bytes()[:-8] + bytes(8))
    refused(cli("sample", "--run", ft, "--ipc", 1, "--steps", 2, "--out", tmp_path / "s2"),
            f"was trained from base {pinned}", pin["sha256"], "restore those weights")
