"""A study's fine-tunes in a folder train `workers` at a time as Ray tasks, and give the runs that training
them one after another in this process gives."""

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from test_experiments import load


def settings(tmp_path, out: str, workers: int):
    """The digits study's smoke settings (4 fine-tuning steps per run) around one shared base."""
    from rdistill.commands.study import build_parser, settings_from_args

    script = load("digits")
    args = build_parser(script.PLAN, script.__doc__).parse_args(["--smoke-test", "--out", str(tmp_path / out),
                                                                 "--workers", str(workers)])
    s = settings_from_args(args, script.PLAN)
    return replace(s, base=replace(s.base, out=str(tmp_path / "base")))


def ema(run: str) -> dict:
    from rdistill.generate.checkpoint import latest_checkpoint

    return load_file(latest_checkpoint(run) / "ema.safetensors")


@pytest.mark.ray
@pytest.mark.slow
def test_fine_tunes_train_at_once_as_ray_tasks_and_match_the_runs_trained_here(tmp_path):
    import ray

    from rdistill.study.runs import train_all

    ray.shutdown()
    here = train_all(settings(tmp_path, "here", workers=0), progress=False)  # the base is pretrained here first
    assert not ray.is_initialized()
    tasks = train_all(settings(tmp_path, "tasks", workers=2), progress=False)
    assert ray.is_initialized()  # the two fine-tunes ran as Ray tasks
    assert list(tasks) == list(here) == ["dit", "difffit", "minimax"] and tasks["dit"] == here["dit"]
    for method in ("difffit", "minimax"):
        assert tasks[method] == str(tmp_path / "tasks" / "runs" / method)
        a, b = ema(here[method]), ema(tasks[method])
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    ray.shutdown()
