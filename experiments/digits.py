"""The Fashion-MNIST study (experiments/fashion_mnist.py) on scikit-learn's digits, which ships with it.

    python experiments/digits.py                     # 4 confusable digits (3, 5, 8, 9): base, difffit, minimax, matrix
    python experiments/digits.py --target digits     # all ten
    python experiments/digits.py --smoke-test        # every stage in about a minute

A base DiT learns all ten digits; Difffit and minimax fine-tune it on the target; every generated method
keeps, per IPC, the guidance that validates best on a carve of the TRAIN split; random, herding and k-center
are the coresets; the small protocol (ConvNet-3, 3 seeds) tests everything on the real test split. 8x8
images are too small to show much (issue 11): this is the quick, always-available version of the study.
"""

from __future__ import annotations

import sys

from rdistill.commands.study import main

# The base: `rdistill pretrain`'s digits default (dit-tiny, patch 2 on 8x8: 16 tokens; 300 epochs at batch
# 64 = 6,300 steps, ~9 min on 2 cores).
BASE = ["train.method=pretrain", "data.name=digits", "model.preset=dit-tiny", "train.batch_size=64", "train.lr=0.001",
        "train.epochs=300", "train.ema_decay=0.999", "train.ckpt_every=1000", "train.log_every=500"]
# Fine-tuning as the paper (SPEC.md section 1), but EMA 0.999: 8 epochs of ~430 images are ~430 steps, over
# which an EMA of 0.9999 would stay 96 % the base.
PAPER = ["train.epochs=8", "train.batch_size=8", "train.lr=0.001", "train.ema_decay=0.999", "train.log_every=100"]
FINETUNE = {"difffit": ["train.method=difffit", *PAPER], "minimax": ["train.method=minimax", *PAPER]}
SETTINGS = dict(ipcs=(1, 10, 50), guidance=(1.0, 2.0, 4.0), seeds=3, val_epochs=100, full_epochs=None, workers=2)
# --smoke-test: 20 base steps, 4 fine-tuning steps, 5 sampling steps, IPC 1 and 2, 1 student epoch.
SMOKE = dict(ipcs=(1, 2), guidance=(1.0, 4.0), seeds=1, student_epochs=1, val_epochs=1, full_epochs=1,
             sample_steps=5, workers=0, judge_epochs=1)
SMOKE_STEPS = {"base": ["train.max_steps=20"], "finetune": ["train.max_steps=4", "train.ckpt_every=2"]}

PLAN = dict(prefix="digits", target="digits[3,5,8,9]", base_out="runs/digits-base", base=BASE, finetune=FINETUNE,
            settings=SETTINGS, smoke=SMOKE, smoke_steps=SMOKE_STEPS)

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], PLAN, __doc__))
