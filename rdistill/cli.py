"""The `rdistill` command: one sub-command per stage of the flow (DESIGN.md).

    rdistill pretrain --dataset digits                       # a base DiT for a small dataset
    rdistill finetune --dataset digits --init runs/digits-pretrain --method minimax
    rdistill sample --run runs/digits-minimax --ipc 50 --out sets/minimax --workers 2
    rdistill select --dataset digits --method herding --ipc 50 --out sets/herding
    rdistill evaluate --surrogate sets/minimax sets/herding --dataset digits --ipc 1 10 50 --full
    rdistill sweep                                           # as experiments/sweep_lambdas.py
    rdistill info --model dit-xl/2 --peft difffit            # parameter counts, no weights loaded
    rdistill convert-dit --ckpt DiT-XL-2-256x256.pt --out dit-xl-2-256

Training commands take a YAML config (--config), flags for the common keys, and any config key as
`key=value` (e.g. train.lambda_r=0.004). Errors in the input are reported in one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# One module per group of sub-commands, each with register(subparsers); a command sets `handler`.
COMMANDS = ["train", "model", "sample", "evaluate", "sweep"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"rdistill {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdistill", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"rdistill.commands.{name}").register(sub)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
