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

Exit codes: 0 done, 2 a refused input (one line on stderr naming the value and what to do), 130 Ctrl-C,
143 SIGTERM (work finished so far is kept; the same command resumes). Heavy libraries (torch, ray,
diffusers) are imported by the handlers, never here or at a command module's top: `--help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import warnings

# One module per group of sub-commands, each with register(subparsers); a command sets `handler`.
COMMANDS = ["train", "model", "sample", "evaluate", "sweep", "teacher"]

# The failures a user can fix: one line, exit 2 (ValueError is the house's "bad input").
EXPECTED_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
EXIT_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 2, 128 + signal.SIGINT, 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as a KeyboardInterrupt so `finally` blocks cancel running work.
    (Ray's blocking calls turn any KeyboardInterrupt into a new one: `_signals` remembers which it was.)"""


_signals: list[int] = []


def _raise_terminated(signum, frame) -> None:
    _signals.append(signum)
    raise Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """rdistill's own warnings as one plain line; other libraries' as Python shows them."""
    if os.path.dirname(os.path.abspath(filename)).startswith(os.path.dirname(os.path.abspath(__file__))):
        print(f"rdistill: warning: {message}", file=file or sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_INPUT
    previous = signal.signal(signal.SIGTERM, _raise_terminated)  # cluster.connect keeps it over Ray's
    try:
        args.handler(args)
    except EXPECTED_ERRORS as e:
        print(f"rdistill {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as e:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        print(f"\nrdistill {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(e, Terminated) or signal.SIGTERM in _signals else EXIT_SIGINT
    finally:
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, previous)
    return 0


def one_line(e: BaseException) -> str:
    """The error's message on one line (an OS error as 'PATH: reason', not '[Errno 2] ...')."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror.lower()}"
    text = str(e) if not isinstance(e, KeyError) else str(e.args[0]) if e.args else ""
    return " ".join(text.split()) or type(e).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdistill", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"rdistill.commands.{name}").register(sub)
    return parser


def run() -> None:
    """The console script (and `python -m rdistill.cli`): main's exit code. After an interrupt the process
    leaves at once: finished work is already recorded, and Ray 2.60's teardown after force-cancelled
    tasks can abort in a C++ thread (`Tried to complete task that was not pending`), which would turn
    130/143 into a crash. Ray's reaper stops the local Ray's processes when this one is gone."""
    code = main()
    if code in (EXIT_SIGINT, EXIT_SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    run()
