"""Resource requests are declared by the caller, and checked against one node at a time (no Ray needed)."""

import pytest

from rdistill.distributed.cluster import node_fits, requested_options


def test_the_request_is_declared_not_read_from_the_cluster():
    assert requested_options(gpus=1, cpus=2) == {"num_cpus": 2, "num_gpus": 1}
    assert requested_options() == {"num_cpus": 1.0}
    with pytest.raises(ValueError, match="gpus=-1"):
        requested_options(gpus=-1)


def test_a_request_must_fit_on_one_node():
    assert node_fits({"CPU": 8.0, "GPU": 1.0}, {"CPU": 1, "GPU": 1})
    assert not node_fits({"CPU": 8.0}, {"CPU": 1, "GPU": 1})
    assert not node_fits({"CPU": 8.0, "GPU": 1.0}, {"GPU": 2})  # two nodes of 1 GPU do not hold a 2-GPU task
    assert node_fits({"CPU": 1.0}, {"CPU": 1, "GPU": 0})  # a zero request asks nothing
