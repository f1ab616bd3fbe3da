"""Sampling as Ray tasks: the same shards whatever the worker count, and a worker that dies is retried."""

import pytest

from rdistill.data.shards import Manifest, read_surrogate
from rdistill.generate.sampling import SampleJob, generate_chunk, run_sampling

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

IPC, STEPS, CLASSES = 3, 4, ("0", "1", "2", "3")  # 4 classes x 2 chunks = 8 tasks


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a cluster that runs here
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(run_dir, tmp_path_factory) -> Manifest:
    """The set sampled in this process (workers=0)."""
    return run_sampling(job(run_dir, tmp_path_factory.mktemp("sets") / "in-process", workers=0), progress=False)


def job(run_dir, out, workers: int) -> SampleJob:
    return SampleJob(run_dir=str(run_dir), out=str(out), ipc=IPC, steps=STEPS, chunk_size=2, classes=CLASSES,
                     workers=workers)


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_workers_write_the_same_shards_as_one_process(local_ray, run_dir, reference, tmp_path, workers):
    m = run_sampling(job(run_dir, tmp_path / "set", workers), progress=False)
    assert m.shards == reference.shards  # names, rows and sha256 of every file
    assert Manifest.load(tmp_path / "set").shards == reference.shards


def test_a_worker_that_dies_is_retried_and_the_set_is_complete(local_ray, run_dir, reference, tmp_path):
    marker = tmp_path / "died-once"

    def dies_on_first_attempt(j, task, source=None):  # defined here: Ray pickles it by value
        import os

        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies; Ray re-runs the task on a new one
        return generate_chunk(j, task, source)

    m = run_sampling(job(run_dir, tmp_path / "set", 2), progress=False, chunk_fn=dies_on_first_attempt)
    assert marker.exists()  # a worker did die
    assert m.shards == reference.shards
    s = read_surrogate(tmp_path / "set")
    assert list(zip(s.labels.tolist(), s.indices.tolist())) == [(k, i) for k in range(4) for i in range(IPC)]
