"""The evaluation matrix on digits (issue 4's closing note): random vs herding vs k-center vs a set generated
by a trained run, IPC 1/10/50, ConvNet-3, 3 seeds, the `small` protocol, plus the full train split.

    python experiments/eval_digits_matrix.py                      # ~20-40 min on 2 CPU cores
    python experiments/eval_digits_matrix.py --run runs/digits-minimax --epochs 150 --workers 2
    python experiments/eval_digits_matrix.py --smoke-test         # seconds: IPC 1/2, 1 seed, 1 epoch, no Ray

Steps: select the coreset baselines at the largest IPC (smaller IPCs are prefixes), sample IPC images per
class from the run's EMA model (skipped, and said so, when the run has no checkpoint), evaluate every cell as
a Ray task, print the matrix, log it to MLflow (SQLite in --out) and print the `mlflow ui` command.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rdistill.data import load_dataset
from rdistill.distributed.cluster import connect
from rdistill.evaluate.cells import MatrixSpec
from rdistill.evaluate.matrix import evaluate_matrix
from rdistill.generate.checkpoint import latest_checkpoint
from rdistill.generate.select import select_coreset
from rdistill.tracking import log_matrix, mlflow_uri, ui_command

IPCS = (1, 10, 50)  # the dataset-condensation benchmarks' IPCs (SPEC.md section 7)
SEEDS = 3  # SPEC.md section 5: mean ± std over 3 runs
STUDENTS = ("convnet-3",)  # the small-image protocol's student
EPOCHS = 300  # the `small` protocol's own count (DC's epoch_eval_train)
BASELINES = ("random", "herding", "kcenter")  # herding / k-center in a fixed random ConvNet-3's features
SELECT_SEED = 0
SAMPLE_SEED = 0
SMOKE = dict(ipcs=(1, 2), seeds=1, epochs=1, workers=0, sample_steps=5)  # a run end to end in seconds


def make_sets(out: Path, run: Path | None, ipc: int, sample_steps: int, workers: int) -> list[str]:
    """The baselines' folders and, when the run has a checkpoint, a generated set's (IPC `ipc`)."""
    dataset = load_dataset("digits")
    folders = []
    for method in BASELINES:
        folders.append(str(out / "sets" / method))
        select_coreset(dataset, method, ipc, SELECT_SEED, folders[-1], progress=False)
    if run is None or latest_checkpoint(run) is None:
        print(f"no generated set: {run} has no checkpoint (train it with `rdistill finetune`)")
        return folders
    from rdistill.generate.sampling import SampleJob, run_sampling

    folders.append(str(out / "sets" / run.name))
    m = run_sampling(SampleJob(run_dir=str(run), out=folders[-1], ipc=ipc, seed=SAMPLE_SEED, steps=sample_steps,
                               workers=workers), progress=False)
    print(f"generated {sum(m.counts.values())} images ({m.method}, {sample_steps} steps) into {folders[-1]}")
    return folders


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/digits-minimax", help="a trained run to sample the generated set from")
    p.add_argument("--out", default="runs/eval-digits-matrix", help="sets, matrix, plots and the MLflow store")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"student epochs (protocol small: {EPOCHS})")
    p.add_argument("--workers", type=int, default=2, help="Ray tasks in flight (0: this process)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto', ray://host:port); default: local Ray")
    p.add_argument("--smoke-test", action="store_true", help="IPC 1/2, 1 seed, 1 epoch, no Ray, a temporary --out")
    args = p.parse_args(argv)
    ipcs, seeds, epochs, workers, steps = IPCS, SEEDS, args.epochs, args.workers, 50  # SPEC.md section 3: 50 steps
    if args.smoke_test:
        ipcs, seeds, epochs, workers, steps = (SMOKE[k] for k in ("ipcs", "seeds", "epochs", "workers", "sample_steps"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp if args.smoke_test else args.out)
        run = Path(args.run) if args.run else None

        # Surrogate sets, then the matrix:
        if workers > 0:
            connect(args.address)  # every Ray task below runs there
        sets = make_sets(out, run, max(ipcs), steps, workers)
        spec = MatrixSpec(tuple(sets), "digits", students=STUDENTS, seeds=seeds, ipcs=ipcs, protocol="small",
                          epochs=None if epochs == EPOCHS else epochs, full=True)
        matrix = evaluate_matrix(spec, workers=workers, progress=True, address=args.address)
        print(matrix.as_table())

        # MLflow:
        uri = mlflow_uri(out)
        run_id = log_matrix(matrix, experiment="digits-matrix", tracking_uri=uri, out_dir=out)
        print(f"{matrix.seconds / 60:.1f} min; MLflow run {run_id}\n{ui_command(uri)}")


if __name__ == "__main__":
    main()
