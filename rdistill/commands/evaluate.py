"""`rdistill evaluate`: the evaluation matrix of surrogate sets (method x IPC x student x seed), logged to MLflow."""

from __future__ import annotations

from rdistill import storage
from rdistill.commands import checks
from rdistill.commands.ray_args import add_ray_args, task_request


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="train students on surrogate sets, test on the real test split (MLflow)",
                       description="Train every (surrogate set, IPC, student, seed) cell and test it on the real "
                                   "test split; print the matrix (mean ± std over seeds, final and best accuracy) "
                                   "and log it to MLflow: a parent run with a child run per cell.")
    p.add_argument("--surrogate", nargs="+", default=[], metavar="DIR",
                   help="surrogate-set folders from `rdistill sample` or `rdistill select` (manifest: method, IPC); "
                        "several draws of one set (made with other --seed values) pool into one row")
    p.add_argument("--dataset", required=True, help="the real dataset: digits, fashion-mnist, imagefolder:PATH, ...")
    p.add_argument("--root", default=None, help="the dataset's folder (ImageNet root, Fashion-MNIST IDX folder)")
    p.add_argument("--image-size", type=int, default=None,
                   help="students train and test at this side (default: the protocol's; small: the data's own, "
                        "which must match the surrogate sets')")
    p.add_argument("--students", nargs="+", default=None,
                   help="student networks: convnet-<depth>, resnetap-10, resnet-18 or a timm name "
                        "(default: the protocol's)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell, 0..N-1 (default 3, as the paper)")
    p.add_argument("--ipc", type=int, nargs="+", default=None,
                   help="IPCs to evaluate, as prefixes of each set (default: each set's own IPC)")
    p.add_argument("--protocol", default="small", choices=["small", "idc", "rded"],
                   help="evaluation protocol (SPEC.md section 5; default small)")
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs (recorded)")
    p.add_argument("--teacher", default=None, help="soft-label protocols (rded): a ResNet-18 state_dict file")
    p.add_argument("--full", action="store_true", help="also train on the whole real train split (upper bound)")
    p.add_argument("--workers", type=int, default=2, help="Ray tasks in flight; 0 runs every cell in this process")
    add_ray_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="memory one cell may take, checked before any work (default: available RAM / workers)")
    p.add_argument("--out", default="runs/evaluate",
                   help="output folder or storage URI (s3://...): matrix, plots (and the local MLflow store); each "
                        "finished cell is kept in <out>/cells, and a rerun runs only the cells not kept there")
    p.add_argument("--tracking-uri", default=None, help="an MLflow tracking server (default: SQLite in --out)")
    p.add_argument("--experiment", default="rdistill", help="MLflow experiment name (default rdistill)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> None:
    from rdistill.evaluate.protocols import get_protocol

    checks.device(args.device)
    checks.surrogate_sets(args.surrogate)
    checks.existing_file(args.teacher, "--teacher")
    checks.output_folder(args.out)
    for flag, low in (("seeds", 1), ("epochs", 1), ("workers", 0), ("image_size", 1)):
        checks.at_least(f"--{flag.replace('_', '-')}", getattr(args, flag), low)
    for ipc in args.ipc or []:
        checks.at_least("--ipc", ipc, 1)
    if args.max_memory is not None and args.max_memory <= 0:
        raise ValueError(f"--max-memory {args.max_memory} is invalid: expected GB > 0")
    protocol = get_protocol(args.protocol)
    if protocol.image_size is None:  # the data's own size: say it (a folder's is its images')
        checks.dataset_image_size(args.dataset, args.image_size, args.root)
    from rdistill.evaluate.cells import MatrixSpec
    from rdistill.evaluate.matrix import evaluate_matrix
    from rdistill.tracking import log_matrix, mlflow_uri, ui_command

    students = tuple(args.students or protocol.students)
    spec = MatrixSpec(surrogates=tuple(args.surrogate), dataset=args.dataset, root=args.root, students=students,
                      seeds=args.seeds, ipcs=tuple(args.ipc) if args.ipc else None, protocol=args.protocol,
                      epochs=args.epochs, full=args.full, teacher=args.teacher, device=args.device,
                      image_size=args.image_size, max_memory=args.max_memory or default_max_memory(args.workers, args.address))
    uri = mlflow_uri(args.out, args.tracking_uri)  # before any work: a storage --out needs a server
    matrix = evaluate_matrix(spec, workers=args.workers, progress=not args.no_progress, address=args.address,
                             options=task_request(args), keep=storage.join(args.out, "cells"))
    print(matrix.as_table())
    run_id = log_matrix(matrix, experiment=args.experiment, tracking_uri=uri, out_dir=args.out)
    print(f"{args.out}: matrix.csv, matrix.md, plots/; MLflow run {run_id} ({matrix.seconds / 60:.1f} min)")
    print(ui_command(uri))


def default_max_memory(workers: int, address: str | None) -> float | None:
    """GB a cell may take by default: this machine's available RAM shared by the cells in flight; None (not
    checked) on a cluster, whose nodes this process cannot see."""
    if address is not None:
        return None
    try:  # Linux; elsewhere the bound is --max-memory's alone
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return kb / 2**20 / max(1, workers)
