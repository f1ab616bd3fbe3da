"""`rdistill sweep`: the Fig. 6 hyper-parameter sweep (Ray Tune + Optuna, MLflow), as experiments/sweep_lambdas.py.

The flags and the flow live here; experiments/sweep_lambdas.py states its own defaults and calls `run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rdistill.commands import checks

# Defaults of `rdistill sweep` (experiments/sweep_lambdas.py states its own).
DEFAULTS = dict(dataset="digits", preset="dit-tiny", trials=8, ipc=10, sample_steps=50, protocol="small",
                student_epochs=None, out="runs/sweep", finetune=[], pretrain=[], test_seeds=1)


def register(sub) -> None:
    p = sub.add_parser("sweep", help="Ray Tune + Optuna sweep over epochs, lambda_r, lambda_d, N_M (Fig. 6)",
                       description="Fine-tune, sample and validate one configuration per trial (Ray Tune with "
                                   "Optuna, the paper's point first), log every trial to MLflow, plot Fig. 6, and "
                                   "test the best configuration and the paper's on the test split.")
    add_sweep_args(p, DEFAULTS)
    p.set_defaults(handler=lambda args: run(args, DEFAULTS))


def add_sweep_args(p: argparse.ArgumentParser, d: dict) -> None:
    p.add_argument("--dataset", default=d["dataset"], help=f"dataset (default {d['dataset']})")
    p.add_argument("--root", default=None, help="the dataset's folder (ImageNet root, Fashion-MNIST IDX folder)")
    p.add_argument("--preset", default=d["preset"], help=f"DiT size of a pretrained base (default {d['preset']})")
    p.add_argument("--base", default=None, help="base model to fine-tune (run folder, diffusers folder or DiT .pt); "
                                                "default: pretrain one into <out>/base, or reuse it")
    p.add_argument("--trials", type=int, default=d["trials"], help=f"trial budget (default {d['trials']})")
    p.add_argument("--out", default=d["out"], help=f"sweep folder or storage URI, e.g. s3://bucket/sweep (default {d['out']})")
    p.add_argument("--resume", action="store_true", help="complete the interrupted sweep in --out")
    p.add_argument("--address", default=None, help="Ray cluster ('auto', ray://host:port); default: a local Ray")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial (DDP when > 1)")
    p.add_argument("--gpu", action="store_true", default=None,
                   help="one GPU per Train worker and evaluation task, declared (an autoscaler adds GPU nodes); default CPUs")
    p.add_argument("--worker-resources", nargs="+", default=[], metavar="NAME=AMOUNT",
                   help="custom Ray resources each Train worker and evaluation task requests (a node type), e.g. gpu_node=1")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials started at once (default: with --gpu every trial, placement decides; else what the CPUs hold)")
    p.add_argument("--asha", action="store_true", help="validate at epoch rungs; ASHA stops weak trials early")
    for axis, (low, high), kind in (("epochs", (1, 12), int), ("lambda-r", (0.001, 0.01), float),
                                    ("lambda-d", (0.002, 0.03), float), ("memory-size", (16, 1024), int),
                                    ("guidance", (1.0, 6.0), float)):
        p.add_argument(f"--{axis}", nargs=2, type=kind, default=None, metavar=("LOW", "HIGH"),
                       help=f"search range (default {low} {high}, Fig. 6)")
    p.add_argument("--ipc", type=int, default=d["ipc"], help=f"images per class per trial (default {d['ipc']})")
    p.add_argument("--sample-steps", type=int, default=d["sample_steps"], help="sampling steps")
    p.add_argument("--protocol", default=d["protocol"], help=f"student protocol (default {d['protocol']})")
    p.add_argument("--student", default=None, help="student network (default: the protocol's first)")
    p.add_argument("--student-epochs", type=int, default=d["student_epochs"], help="student epochs")
    p.add_argument("--test-seeds", type=int, default=d["test_seeds"], help="students per configuration on test")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server (default: $MLFLOW_TRACKING_URI, else SQLite in --out; a storage --out needs one)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fine-tuning config keys, e.g. train.lr=0.0005")


def build(args, d: dict):
    """(settings, pretrain config or None) from the flags; the base fine-tuning config resolved once."""
    from rdistill import storage
    from rdistill.commands.ray_args import parse_resources
    from rdistill.commands.train import PRETRAIN_BASE
    from rdistill.config import load_config
    from rdistill.sweep.settings import Space, SweepSettings

    where = lambda p: p if storage.is_uri(p) else str(Path(p).resolve())  # noqa: E731  (Ray workers: another folder)
    out = where(args.out)
    base_dir = where(args.base) if args.base else storage.join(out, "base")
    data = [f"data.name={args.dataset}"] + ([f"data.root={args.root}"] if args.root else [])
    pretrain = None
    if not args.base:
        pretrain = load_config(None, [*PRETRAIN_BASE, *data, f"model.preset={args.preset}", *d["pretrain"],
                                      f"out={base_dir}"])
    finetune = load_config(None, [*data, f"model.preset={args.preset}", f"model.init={base_dir}", *d["finetune"],
                                  *args.overrides, f"out={storage.join(out, 'trials')}"])
    ranges = {a: tuple(getattr(args, a)) for a in ("epochs", "lambda_r", "lambda_d", "memory_size", "guidance")
              if getattr(args, a) is not None}
    settings = SweepSettings(
        out=out, base=finetune, space=Space(**ranges), trials=args.trials, ipc=args.ipc,
        sample_steps=args.sample_steps, protocol=args.protocol, student=args.student,
        student_epochs=args.student_epochs, test_seeds=args.test_seeds, num_workers=args.workers,
        use_gpu=args.gpu, max_concurrent=args.max_concurrent, worker_resources=parse_resources(args.worker_resources),
        asha=args.asha, tracking=args.tracking_uri)
    return settings, pretrain


def run(args, d: dict) -> None:
    """Check everything, pretrain the base if needed, run (or resume) the sweep and report."""
    from rdistill.sweep.tuner import ensure_base, preflight, run_sweep

    checks.output_folder(args.out)  # a relative path under `ray job submit`, an unwritable URI: refused here
    settings, pretrain = build(args, d)
    checks.device(settings.base.train.device, "train.device")
    preflight(settings, args.address, args.resume)  # bad ranges, budget, address, GPUs: errors before any work
    if pretrain is not None:
        ensure_base(pretrain)
    outcome = run_sweep(settings, resume=args.resume, address=args.address)
    if outcome.failed:
        raise ValueError(f"{outcome.failed} trial(s) failed; rerun with --resume to complete the sweep")
