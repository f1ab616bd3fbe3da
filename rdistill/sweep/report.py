"""What a finished sweep leaves for people: its trials as rows, the Fig. 6 plots, and the final report that
tests the best configuration and the paper's on the real test split (MLflow parent run and stdout).
"""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rdistill.common.stats import STD_LABEL, format_mean_std, mean_std
from rdistill.sweep.settings import AXES, METRIC, PAPER_POINT, Space, SweepOutcome, SweepSettings, trial_config
from rdistill.sweep.tracking import mlflow_client
from rdistill.sweep.trial import evaluate_remote

AXIS_LABELS = {"epochs": "fine-tuning epochs", "lambda_r": "representativeness weight λr",
               "lambda_d": "diversity weight λd", "memory_size": "memory size N_M",
               "guidance": "classifier-free guidance scale"}


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    config: dict  # the four axes
    val_acc: float  # at its last validation
    epoch: int  # fine-tuning epochs of that validation (fewer than config["epochs"] if ASHA stopped it)
    curve: list[tuple[int, float]]  # (epoch, val_acc) of every validation

    @property
    def run_dir(self) -> str:
        return f"trials/{self.trial_id}/finetune"

    @property
    def set_dir(self) -> str:
        return f"trials/{self.trial_id}/surrogate-epoch{self.epoch:02d}"


def trial_rows(results) -> list[TrialRow]:
    """The trials that reported a validation accuracy, best first."""
    rows = []
    for r in results:
        df = r.metrics_dataframe
        if r.metrics is None or df is None or METRIC not in df or not math.isfinite(r.metrics.get(METRIC, math.nan)):
            continue
        done = df[df[METRIC].notna()]
        rows.append(TrialRow(r.metrics["trial_id"], {a: r.config[a] for a in AXES}, float(r.metrics[METRIC]),
                             int(r.metrics["epoch"]), list(zip(done["epoch"].astype(int), done[METRIC].astype(float)))))
    return sorted(rows, key=lambda row: -row.val_acc)


def plot_fig6(rows: list[TrialRow], space: Space, out: Path) -> list[Path]:
    """Validation accuracy against each axis over its search range, one PNG per axis (Fig. 6 a-d); the
    paper's value dashed, the best trial starred."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis in AXES:
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        if axis == "epochs":  # every validation: the accuracy curve along fine-tuning (Fig. 6a)
            for row in rows:
                ax.plot(*zip(*row.curve), marker="o", ms=3, alpha=0.6)
        elif axis == "guidance":  # a linear axis
            ax.scatter([r.config[axis] for r in rows], [r.val_acc for r in rows], s=18)
        else:
            ax.scatter([r.config[axis] for r in rows], [r.val_acc for r in rows], s=18)
            ax.set_xscale("log", base=2 if axis == "memory_size" else 10)
            subs = (1.0,) if axis == "memory_size" else (1.0, 2.0, 5.0)
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2 if axis == "memory_size" else 10, subs=subs))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a short range
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        low, high = getattr(space, axis)
        pad = {"epochs": 0.5, "guidance": 0.25}
        ax.set_xlim(*((low - pad[axis], high + pad[axis]) if axis in pad else (low / 1.2, high * 1.2)))
        ax.scatter([rows[0].config[axis] if axis != "epochs" else rows[0].epoch], [rows[0].val_acc],
                   marker="*", s=120, c="crimson", zorder=3, label="best")
        ax.axvline(PAPER_POINT[axis], ls="--", c="gray", label="paper")
        ax.set(xlabel=AXIS_LABELS[axis], ylabel="validation accuracy (%)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, over no point
        fig.tight_layout()
        paths.append(out / f"fig6-{axis.replace('_', '-')}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def format_table(entries: list[tuple[str, dict, float, dict]]) -> str:
    """Rows (name, config, val_acc, {"final": [...], "best": [...]}) side by side."""
    head = f"{'':24} {'epochs':>6} {'lambda_r':>9} {'lambda_d':>9} {'N_M':>5} {'cfg':>5} {'val acc':>8}"
    lines = [head + f"   test acc final / best-seen (mean ± {STD_LABEL})"]
    for name, c, val, test in entries:
        lines.append(f"{name:24} {c['epochs']:>6} {c['lambda_r']:>9.4g} {c['lambda_d']:>9.4g} {c['memory_size']:>5} {c['guidance']:>5.2f} "
                     f"{val:>8.1f}   {format_mean_std(test['final'])} / {format_mean_std(test['best'])}")
    return "\n".join(lines)


def log_summary(settings: SweepSettings, best: TrialRow, paper_val: float, tests: dict, plots: list[Path],
                table: str) -> None:
    """The sweep's parent run: the best configuration, both test accuracies, the plots and the table."""
    client, _, parent = mlflow_client(settings)
    for axis in AXES:
        client.log_param(parent, f"best.{axis}", best.config[axis])
    client.log_param(parent, "best.trial_id", best.trial_id)
    client.log_metric(parent, "best.val_acc", best.val_acc)
    client.log_metric(parent, "paper.val_acc", paper_val)
    for name, accs in tests.items():
        client.log_metric(parent, f"{name}.test_acc_final", mean_std(accs["final"])[0])
        client.log_metric(parent, f"{name}.test_acc_best", mean_std(accs["best"])[0])
    for p in plots:
        client.log_artifact(parent, str(p))
    client.log_text(parent, table, "summary.txt")
    client.set_terminated(parent, "FINISHED")


def final_report(settings: SweepSettings, rows: list, outcome: SweepOutcome) -> None:
    """Fig. 6 plots; the best configuration and the paper's tested on the real test split; MLflow; stdout."""
    import ray

    from rdistill import storage
    from rdistill.distributed.train_ray import fit_ray
    from rdistill.tracking import ui_command

    out = settings.out if storage.is_uri(settings.out) else str(Path(settings.out).resolve())
    best = rows[0]
    paper = next((r for r in rows if r.config == PAPER_POINT and r.epoch == PAPER_POINT["epochs"]), None)
    if paper is None:  # not among the trials (outside the space, or stopped early): fine-tune it now
        paper_run, paper_set = storage.join(out, "paper-default", "finetune"), storage.join(out, "paper-default", "surrogate")
        fit_ray(trial_config(settings, PAPER_POINT, paper_run), num_workers=settings.num_workers,
                gpus_per_worker=settings.gpus, worker_resources=settings.worker_resources, name="finetune",
                wait=settings.resource_wait,
                storage_path=storage.join(out, "paper-default", "ray"))
        refs = evaluate_remote(settings, paper_run, paper_set, "validation", [settings.seed],
                               guidance=PAPER_POINT["guidance"])
        paper_val = ray.get(refs)[0]["final_acc"]
    else:
        paper_run, paper_set, paper_val = storage.join(out, paper.run_dir), storage.join(out, paper.set_dir), paper.val_acc
    seeds = [settings.seed + k for k in range(settings.test_seeds)]
    both = (("best", storage.join(out, best.run_dir), storage.join(out, best.set_dir), best.config["guidance"]),
            ("paper", paper_run, paper_set, PAPER_POINT["guidance"]))
    refs = {name: evaluate_remote(settings, run, sdir, "test", seeds, guidance=g)  # both at once
            for name, run, sdir, g in both}
    tests = {k: {"final": [a["final_acc"] for a in v], "best": [a["best_acc"] for a in v]}
             for k, v in ((k, ray.get(r)) for k, r in refs.items())}
    trained = {**best.config, "epochs": best.epoch}
    outcome.table = format_table([(f"best (trial {best.trial_id})", trained, best.val_acc, tests["best"]),
                                  ("paper default", PAPER_POINT, paper_val, tests["paper"])])
    outcome.best, outcome.test = {**trained, METRIC: best.val_acc, "trial_id": best.trial_id}, tests
    with plot_folder(out) as folder:
        plots = plot_fig6(rows, settings.space, folder)
        log_summary(settings, best, paper_val, tests, plots, outcome.table)
        outcome.plots = [publish_plot(p, out) for p in plots]
    print(f"\nBest configuration of {len(rows)} trials: " + ", ".join(f"{a} {trained[a]:.4g}" for a in AXES))
    print(f"Validation: {settings.val_fraction:.0%} of each class of the train split; test: the real test split "
          f"({settings.test_seeds} student(s) each, {settings.student or 'the protocol student'}).\n{outcome.table}")
    print("Plots:\n" + "\n".join(f"  {p}" for p in outcome.plots))
    print(f"Compare the trials: {ui_command(settings.tracking_uri)}")


@contextmanager
def plot_folder(out: str):
    """Where the plots are drawn: the sweep's folder, or for a sweep in storage a temporary local folder."""
    from rdistill import storage

    if not storage.is_uri(out):
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="rdistill-plots-") as tmp:
        yield Path(tmp)


def publish_plot(path: Path, out: str) -> str:
    """A plot's place in the sweep's location (for storage: uploaded there as one atomic object)."""
    from rdistill import storage

    if not storage.is_uri(out):
        return str(path)
    storage.write_bytes(storage.join(out, path.name), path.read_bytes())
    return storage.join(out, path.name)
