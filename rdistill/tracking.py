"""Everything MLflow: where runs go, one run with params, metrics and artifacts, and an evaluation matrix.

Local default: a SQLite store in the output folder (mlflow 3.17's file store refuses to run), artifacts in
`mlartifacts/` next to it; `mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db` shows them. A tracking
URI (a server) replaces both. Runs are written through `MlflowClient`, never the global active run, so
library code never leaves a run open. Run names carry no timestamps.

An evaluation matrix is one parent run (params: the resolved evaluation config and protocol; metrics
`acc/<student>/ipc<k>/<method>/{final,best}_{mean,std}`, `vs_random/...`, `gap_full/...`,
`mmd/ipc<k>/<method>/{linear,rbf}`; artifacts: the matrix as CSV and Markdown, the plots, the config YAML)
with a child run per cell (params: the cell; metrics final_acc, best_acc, seconds and test_acc per epoch).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from rdistill.config import flatten

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # next to the SQLite file
PARENT_TAG = "mlflow.parentRunId"  # the tag MLflow nests child runs by
EXPERIMENT_KIND = "mlflow.experimentKind"  # "custom_model_development": the UI opens on runs, not GenAI traces
MAX_PARAMS, MAX_METRICS = 100, 1000  # per log_batch call (MLflow's limits)


def mlflow_uri(out_dir, uri: str | None = None) -> str:
    """`uri` (--tracking-uri) if given, else $MLFLOW_TRACKING_URI (a server on a cluster), else
    sqlite:///<absolute out_dir>/mlflow.db. An out_dir in storage (a URI) has no SQLite default: ValueError."""
    from rdistill import storage

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None and storage.is_uri(out_dir):
        raise ValueError(f"--out {out_dir} is in storage, where MLflow cannot keep a SQLite file: give an MLflow "
                         "server with --tracking-uri http://HOST:5000 (or set MLFLOW_TRACKING_URI)")
    return uri or f"sqlite:///{Path(out_dir).resolve() / DB_NAME}"


def ui_command(uri: str) -> str:
    """The shell command that shows the runs of a local store."""
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser"


def client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str) -> str:
    """The experiment's id, creating it (local SQLite: artifacts in mlartifacts/ beside the database)."""
    e = c.get_experiment_by_name(name)
    if e is not None:
        return e.experiment_id
    uri = c.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).as_uri()
    return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: "custom_model_development"})


def params_of(tree: Mapping) -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: a nested config as MLflow params (dotted keys, string values); characters
    MLflow refuses in a key (a set named "minimax[r=mean,d=off]") replaced by "_"."""
    return {re.sub(r"[^\w\-. /:]", "_", k): str(v) for k, v in flatten(tree).items()}


def metric_name(*parts) -> str:
    """Parts joined by "/", characters MLflow refuses replaced by "_"."""
    return "/".join(re.sub(r"[^\w\-. ]", "_", str(p)) for p in parts)


def log_run(params: Mapping, metrics_by_step: Mapping[int, Mapping[str, float]], artifacts: Sequence = (),
            experiment: str = "rdistill", parent: str | None = None, *, tracking_uri: str | None = None,
            name: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    """One finished run: params (nested dicts flattened), metrics {step: {name: value}}, artifacts (paths, or
    (path, artifact folder) pairs); a child of run `parent` if given. Returns the run id.

    tracking_uri None: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    from mlflow.entities import Metric, Param, RunStatus

    c = client(mlflow_uri(".", tracking_uri))
    run_tags = dict(tags or {}, **({PARENT_TAG: parent} if parent else {}))
    run = c.create_run(experiment_id(c, experiment), run_name=name, tags=run_tags)
    rid, status = run.info.run_id, RunStatus.to_string(RunStatus.FAILED)
    try:
        ps = [Param(k, v) for k, v in params_of(params).items()]
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, int(step)) for step, row in metrics_by_step.items() for k, v in row.items()]
        for i in range(0, len(ps), MAX_PARAMS):
            c.log_batch(rid, params=ps[i : i + MAX_PARAMS])
        for i in range(0, len(ms), MAX_METRICS):
            c.log_batch(rid, metrics=ms[i : i + MAX_METRICS])
        for a in artifacts:
            path, folder = (a, None) if isinstance(a, (str, Path)) else a
            c.log_artifact(rid, str(path), folder)
        status = RunStatus.to_string(RunStatus.FINISHED)
    finally:
        c.set_terminated(rid, status)
    return rid


# The evaluation matrix:


def matrix_config(matrix) -> dict:
    """The resolved evaluation: the spec, the protocol, each set's manifest facts, the feature network."""
    from rdistill import storage
    from rdistill.evaluate.protocols import get_protocol
    from rdistill.data.shards import Manifest

    spec = matrix.spec
    sets = {}
    for folder in spec.surrogates:
        m = Manifest.load(folder)
        where = folder if storage.is_uri(folder) else str(Path(folder).resolve())
        entry = sets.setdefault(m.method, {"folder": where, "ipc": m.ipc, "source": m.source})
        if entry["folder"] != where:  # the method's other sets: its draws, or other IPCs
            entry.setdefault("folders", [entry["folder"]]).append(where)
    return {"evaluate": asdict(spec), "protocol": asdict(get_protocol(spec.protocol, spec.epochs)),
            "surrogates": sets, "feature_network": matrix.feature_network}


def row_key(row) -> str:
    return metric_name(row.student, "full") if row.ipc is None else metric_name(row.student, f"ipc{row.ipc}", row.method)


def matrix_metrics(matrix) -> dict[str, float]:
    """The parent run's metrics: accuracy mean/std, relative metrics and MMD per row, and the cost."""
    out = {"minutes": matrix.seconds / 60}
    for r in matrix.rows:
        k = row_key(r)
        out.update({f"acc/{k}/final_mean": r.final_mean, f"acc/{k}/final_std": r.final_std,
                    f"acc/{k}/best_mean": r.best_mean, f"acc/{k}/best_std": r.best_std})
        if r.draws > 1:
            out.update({f"acc/{k}/draws": r.draws, f"acc/{k}/final_draw_std": r.final_draw_std,
                        f"acc/{k}/best_draw_std": r.best_draw_std})
        for what in ("final", "best"):
            for rel in ("vs_random", "gap_full"):
                v = getattr(r, f"{what}_{rel}")
                if v is not None:
                    out[f"{rel}/{k}/{what}"] = v
        if r.mmd_linear is not None and r.student == matrix.rows[0].student:  # MMD does not depend on the student
            out[f"mmd/{metric_name(f'ipc{r.ipc}', r.method)}/linear"] = r.mmd_linear
            out[f"mmd/{metric_name(f'ipc{r.ipc}', r.method)}/rbf"] = r.mmd_rbf
    for g in matrix.gaps:  # generated methods paired on the same noise (rdistill.evaluate.pairs)
        k = metric_name(g.student, f"ipc{g.ipc}", f"{g.method}-vs-{g.other}")
        out.update({f"paired/{k}/final_mean": g.final_mean, f"paired/{k}/final_std": g.final_std,
                    f"paired/{k}/best_mean": g.best_mean, f"paired/{k}/best_std": g.best_std,
                    f"paired/{k}/draws": g.draws, f"paired/{k}/ahead": g.ahead})
    return out


def write_matrix_artifacts(matrix, config: Mapping, folder) -> list[tuple[Path, str | None]]:
    """matrix.csv, matrix.md, config.yaml and the plots into folder, as (path, artifact folder) pairs."""
    from rdistill.evaluate.plots import write_plots

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    matrix.to_csv(folder / "matrix.csv")
    (folder / "matrix.md").write_text(matrix.as_table(markdown=True))
    (folder / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    files = [(folder / n, None) for n in ("matrix.csv", "matrix.md", "config.yaml")]
    return files + [(p, "plots") for p in write_plots(matrix, folder / "plots")]


def log_matrix(matrix, config: Mapping | None = None, artifacts: Sequence = (), experiment: str = "rdistill", *,
               tracking_uri: str | None = None, out_dir=None, name: str = "evaluation-matrix") -> str:
    """One parent run for the matrix, a child run per cell; returns the parent's run id.

    config None: `matrix_config(matrix)`. Table, plots and config are written to out_dir (default: a
    temporary folder; a storage URI: published there from scratch) and logged, with any extra `artifacts`."""
    from rdistill import storage

    config = dict(config or matrix_config(matrix))
    with tempfile.TemporaryDirectory() as tmp:
        local = out_dir if out_dir is not None and not storage.is_uri(out_dir) else tmp
        files = write_matrix_artifacts(matrix, config, local)
        if out_dir is not None and storage.is_uri(out_dir):
            storage.upload_dir(tmp, out_dir)
        parent = log_run(config, {0: matrix_metrics(matrix)}, files + list(artifacts), experiment,
                         tracking_uri=tracking_uri, name=name)
    draws: dict[tuple, list] = {}  # (method, ipc) -> its sets, in order: more than one are its draws
    for r in matrix.results:
        sets = draws.setdefault((r.cell.method, r.cell.ipc), [])
        sets += [] if r.cell.surrogate in sets else [r.cell.surrogate]
    for r in matrix.results:
        c, sets = r.cell, draws[r.cell.method, r.cell.ipc]
        steps = {0: {"final_acc": r.final_acc, "best_acc": r.best_acc, "seconds": r.seconds}}
        for epoch, acc in r.history:
            steps.setdefault(epoch, {})["test_acc"] = acc
        what = c.method if c.ipc is None else f"{c.method} ipc{c.ipc}"
        log_run({**asdict(c), "epochs": r.epochs}, steps, (), experiment, parent, tracking_uri=tracking_uri,
                name=f"{what} {c.student} seed{c.seed}" + (f" draw{sets.index(c.surrogate)}" if len(sets) > 1 else ""))
    return parent
