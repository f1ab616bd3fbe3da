"""The flags and the flow of a distillation study script (experiments/fashion_mnist.py, experiments/digits.py).

A script states its PLAN (the base, the fine-tuning methods, the study settings, the smoke-test shrinkage)
and calls `main(argv, PLAN, __doc__)`; rdistill.study does the work.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser(plan: dict, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--target", default=plan["target"], help=f"what to distil (default {plan['target']})")
    p.add_argument("--out", default=None,
                   help=f"study folder or storage URI, e.g. s3://bucket/study (default runs/{plan['prefix']}-<target>)")
    p.add_argument("--base", default=plan["base_out"], help=f"where the base lives, pretrained once (default {plan['base_out']})")
    if plan.get("ablation"):
        p.add_argument("--ablation", action="store_true", help="also the ablation runs (Table 5), at their own IPCs")
    p.add_argument("--address", default=None, help="Ray cluster ('auto', ray://host:port); default: a local Ray")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server (default: $MLFLOW_TRACKING_URI, else SQLite in --out; a storage --out needs one)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray tasks at once: fine-tunes, students, cells (0: this process)")
    p.add_argument("--draws", type=int, default=None,
                   help="make each chosen generated set and the random coreset this many times (other seeds) and "
                        "pool each row over draws x seeds (default: the script's, 1)")
    p.add_argument("--smoke-test", action="store_true", help="every stage, tiny, in --out")
    return p


def settings_from_args(args, plan: dict):
    """StudySettings from the flags and the script's plan (smoke: every stage shrunk, the base in --out)."""
    from rdistill import storage
    from rdistill.config import load_config
    from rdistill.study import StudySettings

    smoke = args.smoke_test
    target = plan.get("smoke_target", args.target) if smoke else args.target
    out = args.out or f"runs/{plan['prefix']}-{target.replace('/', '-')}" + ("-smoke" if smoke else "")
    out = out if storage.is_uri(out) else os.path.abspath(out)  # Ray workers do not run in this folder
    base = load_config(None, [*plan["base"], *(plan["smoke_steps"]["base"] if smoke else []),
                              f"out={storage.join(out, 'base')}" if smoke else f"out={args.base}"])
    ablation = plan.get("ablation", {}) if getattr(args, "ablation", False) else {}
    methods = plan["finetune"] | ablation
    extra = plan["smoke_steps"]["finetune"] if smoke else []
    values = dict(plan["smoke"] if smoke else plan["settings"])
    values |= {k: getattr(args, k) for k in ("workers", "draws") if getattr(args, k) is not None}
    return StudySettings(base=base, target=target, out=out, finetune={m: [*k, *extra] for m, k in methods.items()},
                         ablation=tuple(ablation),
                         experiment=f"{plan['prefix']}-study", tracking_uri=args.tracking_uri, **values)


def main(argv, plan: dict, doc: str) -> int:
    """Parse, run the study; an error in the input is one line and exit 2."""
    from rdistill.study import run_study

    args = build_parser(plan, doc).parse_args(argv)
    try:
        from rdistill.commands.checks import output_folder

        output_folder(args.out or "runs")  # an unwritable URI, a relative path under `ray job submit`: refused here
        run_study(settings_from_args(args, plan), address=args.address, progress=not args.smoke_test)
    except (ValueError, FileNotFoundError) as e:
        print(f"{plan['prefix']}: error: {e}", file=sys.stderr)
        return 2
    return 0
