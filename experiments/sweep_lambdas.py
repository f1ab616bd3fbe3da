"""Fig. 6 as one command: a Ray Tune + Optuna sweep over fine-tuning epochs, lambda_r, lambda_d and N_M.

    python experiments/sweep_lambdas.py                  # digits, local Ray, from the committed base: 4.6 min on 2 busy cores
    python experiments/sweep_lambdas.py --pretrain-base  # pretrain the base first (~9 more minutes, once)
    python experiments/sweep_lambdas.py --smoke-test     # the same flow end to end in about a minute
    python experiments/sweep_lambdas.py --resume         # complete an interrupted sweep, no trial lost or repeated
    python experiments/sweep_lambdas.py --address auto --dataset imagewoof --root /data/imagenet \\
        --base DiT-XL-2-256x256.pt --preset dit-xl/2 data.codec=vae:/models/sd-vae-ft-ema --protocol idc --trials 32

Each trial fine-tunes the base model (Ray Train), samples IPC images per class, trains a student on them
and validates it on 20% of the TRAIN split; the paper's point (8 epochs, lambda_r 0.002, lambda_d 0.008,
N_M 64) is the first trial. At the end the best configuration and the paper's are tested on the test split.
Prints the best configuration, the plots and the `mlflow ui` command; every trial is in MLflow.
"""

import argparse
import sys
from pathlib import Path

from rdistill.commands.sweep import add_sweep_args, run

# The default run: digits (it ships with scikit-learn), a dit-tiny base pretrained once into <out>/base.
SETTINGS = dict(
    dataset="digits",
    preset="dit-tiny",  # ~1 M parameters: a base a laptop can pretrain
    trials=6,  # the paper's point + 5 Optuna suggestions, 2 trials at a time on 2 cores
    ipc=10,  # images per class of each trial's surrogate set
    sample_steps=50,  # SPEC.md section 3
    protocol="small",  # ConvNet-3, SGD (SPEC.md section 5)
    student_epochs=100,  # not 300: on 10 real images/class, val acc 90.7 vs 91.1 %, 12 s vs 31 s
    test_seeds=1,  # students per configuration in the final test report
    out="runs/sweep-lambdas",
    pretrain=[],  # `rdistill pretrain`'s defaults (PRETRAIN_BASE: 6,300 steps, once; later sweeps reuse the base)
    finetune=[
        "train.ema_decay=0.999",  # digits has ~170 steps per epoch: 0.9999 would keep the EMA near the base
        "train.log_every=50",  # a loss report every 50 fine-tuning steps
    ],
)
# The digits base of SETTINGS, pretrained once by `rdistill pretrain` and committed (bases/README.md has the
# command and its time): the default run fine-tunes from it instead of spending ~9 minutes pretraining.
COMMITTED_BASE = Path(__file__).resolve().parent / "bases" / "digits-dit-tiny"
# --smoke-test: the whole flow in about a minute (tiny steps, 2 trials, 1 student epoch).
SMOKE = dict(SETTINGS, trials=2, ipc=2, sample_steps=5, student_epochs=1, out="runs/sweep-lambdas-smoke",
             pretrain=["train.max_steps=20"],
             finetune=["train.max_steps=4", "train.log_every=2", "train.ckpt_every=2"])


def main(argv=None) -> int:
    smoke = "--smoke-test" in (sys.argv[1:] if argv is None else argv)
    settings = SMOKE if smoke else SETTINGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke-test", action="store_true", help="end to end in about a minute")
    p.add_argument("--pretrain-base", action="store_true",
                   help="pretrain the base into <out>/base instead of using the committed digits base")
    add_sweep_args(p, settings)
    args = p.parse_args(argv)
    if args.base is None and not (smoke or args.pretrain_base) and (args.dataset, args.preset) == ("digits", "dit-tiny"):
        args.base = str(COMMITTED_BASE)
    try:
        run(args, settings)
    except (ValueError, FileNotFoundError) as e:
        print(f"sweep_lambdas: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
