"""A distillation study: the whole flow for one target, each method at its best guidance chosen on validation.

    matrix = run_study(StudySettings(base=..., target="fashion-tops", out="runs/fashion"))

1. base: a DiT pretrained on the parent dataset (all of its classes), or the one given.
2. fine-tune: each method of `finetune` (difffit, minimax; the `ablation` ones have their own grid and IPCs
   and matrix parts) on the target's classes, the target train split's carve withheld; `workers` runs at once.
3. guidance: every generated method (`dit` = the base, un-fine-tuned) sampled at max(ipcs) for each scale
   of the grid; at each IPC (a prefix of that set) a student is trained and tested on the carve; each
   (method, IPC) keeps the scale with the best validation accuracy. The test split is not touched.
4. coresets: random / herding / k-center from the target's train split.
5. the matrix on the real test split: every set at each IPC (small protocol, `seeds` students) and the
   full train split as the upper bound (its own epochs), merged into one Matrix for MLflow. With `draws` > 1,
   each chosen generated set and the random coreset are made again with other seeds and each row pools its
   draws x seeds (rdistill.study.draws).
Everything lands under `out` and a rerun reuses it: runs resume, complete sets are skipped, validation.json keeps
the validation table entry by entry, matrix/parts each part of the matrix and matrix/cells each finished cell.
`out` is a folder or a storage URI (s3://...); in storage, the runs train on Ray Train and are published
there, a base only this node's disk holds is published under <out>/base first, and MLflow is a server.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rdistill import storage
from rdistill.study.draws import sample_draws, select_draws
from rdistill.study.evaluation import evaluate_all, score_fidelity, select_all
from rdistill.study.guidance import choose_guidance, sample_grid
from rdistill.study.runs import finetune_config, stored_base, train_all, train_run
from rdistill.study.settings import GENERATED, StudySettings

__all__ = ["GENERATED", "StudySettings", "finetune_config", "run_study", "train_run"]


def run_study(s: StudySettings, *, address: str | None = None, progress: bool = True):
    """All five steps; returns the merged Matrix (also in <out>/matrix.md and MLflow)."""
    from rdistill.data import load_dataset
    from rdistill.tracking import log_matrix, mlflow_uri, ui_command

    # Checks, before any work:
    if s.base.train.method != "pretrain":
        raise ValueError(f"the study's base is pretrained by it: base train.method must be pretrain, "
                         f"not {s.base.train.method!r}")
    if missing := [m for m in (GENERATED, *s.finetune) if m in s.coresets]:
        raise ValueError(f"method names {missing} are both generated and coreset methods")
    if unknown := [m for m in s.ablation if m not in s.finetune]:
        raise ValueError(f"ablation methods {unknown} are not fine-tuning methods ({', '.join(s.finetune)})")
    if s.draws < 1:
        raise ValueError(f"draws must be >= 1 (1: each set made once), got {s.draws}")
    if s.ablation and (outside := sorted(set(s.ablation_ipcs) - set(s.ipcs))):
        raise ValueError(f"ablation IPCs {outside} are not among the study's IPCs {list(s.ipcs)}")
    classes = load_dataset(s.target).classes  # an unknown target or class raises here
    uri = mlflow_uri(s.out, s.tracking_uri)  # a study in storage without an MLflow server raises here
    if storage.is_uri(s.out):
        storage.check_writable(s.out)

    # Generate, choose on validation, select, evaluate:
    s = stored_base(s)
    runs = train_all(s, progress, address)
    sets = sample_grid(s, runs, classes)
    best = choose_guidance(s, sets, address)
    for (method, ipc), (g, acc, _) in sorted(best.items()):
        print(f"[study] {method} ipc {ipc}: guidance {g:g} (validation {acc:.1f} %)")
    coresets = select_all(s)
    drawn = sample_draws(s, runs, best, classes) | select_draws(s, coresets)
    matrix = evaluate_all(s, best, coresets, address, drawn)
    print(matrix.as_table())
    if s.judge_epochs is not None:  # how often a real-trained network recognises each set's labels
        score_fidelity(s, sets, coresets)

    # MLflow (the validation table and the minutes as artifacts):
    config = {"study": {k: v for k, v in s.__dict__.items() if k != "base"}, "base": s.base.out,
              "guidance_chosen": {f"{m}/ipc{k}": g for (m, k), (g, _, _) in best.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        names = ("validation.json", "minutes.json") + (("fidelity.json",) if s.judge_epochs is not None else ())
        tables = [Path(tmp) / name for name in names]
        for t in tables:
            t.write_bytes(storage.read_bytes(storage.join(s.out, t.name)))
        run_id = log_matrix(matrix, config=json.loads(json.dumps(config, default=str)), experiment=s.experiment,
                            tracking_uri=uri, out_dir=storage.join(s.out, "matrix"), name=f"study {s.target}",
                            artifacts=tables)
    print(f"MLflow run {run_id}\n{ui_command(uri)}")
    return matrix
