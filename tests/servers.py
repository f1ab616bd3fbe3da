"""Servers the cluster tests start on loopback (an S3 API: moto_server; an MLflow tracking server), and Ray nodes.

Each is a child process started here and stopped by its own pid (SIGTERM, then SIGKILL of its process
group), never by name. Both bind 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """The console script of this interpreter's environment (the venv), else whatever PATH finds."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A server in its own process group (so stop() reaches its children), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    """Poll `url` until it answers 200; RuntimeError with the log's tail if the server dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the server's process group (by its pid), SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def start_moto(folder: Path) -> tuple[subprocess.Popen, str]:
    """moto_server on 127.0.0.1:<free port>; returns (process, endpoint URL)."""
    port = free_port()
    log = folder / "moto.log"
    proc = start([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    wait_healthy(f"{endpoint}/moto-api/", proc, log, timeout=60)
    return proc, endpoint


def s3_uri(endpoint: str, bucket: str, prefix: str = "") -> str:
    """An s3:// location on the moto endpoint that pyarrow.fs opens with no other configuration."""
    path = f"{bucket}/{prefix}".rstrip("/")
    return f"s3://{path}?endpoint_override={endpoint}&scheme=http&allow_bucket_creation=true"


def start_mlflow(folder: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1:<free port>, SQLite backend and artifacts in `folder`; (process, URL)."""
    port = free_port()
    log = folder / "mlflow.log"
    cmd = [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"]
    proc = start(cmd, log, {"MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(folder)})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, log, timeout=120)
    return proc, url


# Ray nodes of ray.cluster_utils.Cluster:


def node_env(folder: Path, mlflow_url: str) -> dict:
    """One node's own environment: its scratch, HOME and TMPDIR, the store's credentials, the MLflow server."""
    for sub in ("scratch", "home", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {"RDISTILL_SCRATCH": str(folder / "scratch"), "HOME": str(folder / "home"),
            "TMPDIR": str(folder / "tmp"), "MLFLOW_TRACKING_URI": mlflow_url,
            "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", **DUMMY_AWS}


def node_processes(nodes) -> list[subprocess.Popen]:
    """The processes (raylet, GCS, ...) Ray started for these nodes of a ray.cluster_utils.Cluster."""
    return [p.process for n in nodes for infos in n.all_processes.values() for p in infos]


def kill_leftovers(procs: list[subprocess.Popen]) -> None:
    """SIGKILL, by its own handle, any of these processes still running after a shutdown."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
