"""rdistill.common.devices: what a reused worker process gives back to the GPU."""

import pytest
import torch

from rdistill.common.devices import release_gpu_memory


def test_release_gpu_memory_empties_the_cuda_cache_only_where_there_is_cuda(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    release_gpu_memory()
    assert emptied == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    release_gpu_memory()
    assert emptied == [True]


def test_a_sweep_evaluation_gives_its_gpu_memory_back_even_when_it_fails(monkeypatch, tmp_path):
    import rdistill.common.devices as devices
    from rdistill.config import load_config
    from rdistill.sweep.settings import SweepSettings
    from rdistill.sweep.trial import evaluate

    released = []
    monkeypatch.setattr(devices, "release_gpu_memory", lambda: released.append(True))
    s = SweepSettings(out=str(tmp_path), base=load_config(None, [f"model.init={tmp_path / 'base'}"]))
    with pytest.raises((FileNotFoundError, ValueError)):  # no run to sample from
        evaluate(s, str(tmp_path / "no-run"), str(tmp_path / "set"), "validation", 0, 4.0)
    assert released == [True]
