"""A two-node Ray cluster, an S3 server and an MLflow server, all on loopback, shared by tests/cluster.

Node 1 (the head, where the driver runs) and node 2 (custom resource {"n2": 1}) each get their own
scratch folder, HOME and TMPDIR through the node's environment: nothing is shared between them but the
S3 store and the MLflow server. Every process started here is stopped by its own pid (its Popen handle) at the end of the
session, also when a test fails.
"""

import os

import pytest

from servers import kill_leftovers, node_env, node_processes, s3_uri, start_mlflow, stop


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory):
    proc, url = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3, mlflow_url):
    """(ray.cluster_utils.Cluster, {"head": folder, "n2": folder}) with the driver connected to it.
    One per test module: a Ray cluster (and the driver's connection to it) must not outlive the cluster
    tests, or the next test's local `ray.init` would find it and refuse to start its own."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    folders = {name: tmp_path_factory.mktemp(f"node-{name}") for name in ("head", "n2")}
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "env_vars": node_env(folders["head"], mlflow_url)})
    procs = node_processes([c.head_node])
    try:
        n2 = c.add_node(num_cpus=1, num_gpus=0, resources={"n2": 1}, env_vars=node_env(folders["n2"], mlflow_url))
        procs += node_processes([n2])
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        yield c, folders
    finally:
        ray.shutdown()
        c.shutdown()
        kill_leftovers(procs)


@pytest.fixture
def s3_prefix(s3, request):
    """A fresh prefix in the test bucket for one test."""
    return s3_uri(s3, "rdistill", request.node.name.replace("[", "-").rstrip("]"))
