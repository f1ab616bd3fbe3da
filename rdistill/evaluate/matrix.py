"""The evaluation matrix: each (method, IPC, student, seed) cell trains a student on a surrogate set and
tests it on the real test split (rdistill.evaluate.cells); a row is a (method, IPC, student) over the seeds.

    spec = MatrixSpec(surrogates=("sets/random", "sets/herding"), dataset="digits", ipcs=(1, 10, 50), full=True)
    matrix = evaluate_matrix(spec, workers=2)  # one Ray task per cell; workers=0 runs them in this process
    matrix = evaluate_matrix(spec, workers=2, keep="runs/cells")  # each finished cell kept: a rerun resumes
    print(matrix.as_table())

Two accuracies (top-1 %), labelled everywhere: `final`, after the last epoch, and `best`, the maximum over
the tests during training (what the reference implementations report). Mean and std over seeds 0..N-1;
the std is rdistill.common.stats's (population, ddof 0, as the papers report). `vs random` = row mean -
mean of the `random` set at the same IPC and student; `gap to full` = mean of `full` (the whole real train
split, hard labels) - row mean. MMD to the real train split: rdistill.evaluate.features. Several draws of a set
pool into its row (rdistill.evaluate.draws); generated methods that share draws are also compared draw by draw
(`Matrix.gaps`, rdistill.evaluate.pairs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from rdistill.common.stats import STD_LABEL, mean_std
from rdistill.evaluate.cells import (FULL, Cell, CellResult, DataSpec, MatrixSpec, check_inputs, load_data,
                                     load_manifests, plan_cells, run_cell)
from rdistill.evaluate.draws import by_draw, draw_means
from rdistill.evaluate.features import Features, compute_features
from rdistill.evaluate.pairs import Gap, NoiseKey, noise_keys, paired_gaps
from rdistill.evaluate.protocols import get_protocol


@dataclass(frozen=True)
class Row:
    method: str
    ipc: int | None  # None: the full train split
    student: str
    seeds: int
    epochs: int
    final_mean: float  # % after the last epoch
    final_std: float
    best_mean: float  # % max seen during training (the reference's number)
    best_std: float
    final_vs_random: float | None = None  # row - random, same IPC and student
    best_vs_random: float | None = None
    final_gap_full: float | None = None  # full - row, same student
    best_gap_full: float | None = None
    mmd_linear: float | None = None  # to the real train split
    mmd_rbf: float | None = None
    guidance: float | None = None  # the set's classifier-free guidance scale (generated sets)
    draws: int = 1  # sets made again with another seed (rdistill.evaluate.draws), each tested on every seed
    final_draw_std: float | None = None  # std of the draws' means (None: one draw)
    best_draw_std: float | None = None


def aggregate(results, mmd: dict | None = None) -> list[Row]:
    """Rows (method, ipc, student) over seeds and draws, with relative metrics and MMD; students, then IPC,
    then method. Mean and std pool every cell of a row (draws x seeds); the draw std is that of the draws' means."""
    groups = by_draw(results)
    rows = {}
    for (method, ipc, student), draws in groups.items():
        rs = [r for cells in draws.values() for r in cells]
        (fm, fs), (bm, bs) = mean_std([r.final_acc for r in rs]), mean_std([r.best_acc for r in rs])
        d = (mmd or {}).get((method, ipc), {})
        rows[method, ipc, student] = Row(method, ipc, student, len({r.cell.seed for r in rs}),
                                         max(r.epochs for r in rs), fm, fs, bm, bs, mmd_linear=d.get("linear"),
                                         mmd_rbf=d.get("rbf"), guidance=rs[0].cell.guidance, **draw_spread(draws))
    for key, r in rows.items():
        rnd, full = rows.get(("random", r.ipc, r.student)), rows.get((FULL, None, r.student))
        if rnd and r.method != "random" and r.ipc is not None:
            rows[key] = r = replace(r, final_vs_random=r.final_mean - rnd.final_mean,
                                    best_vs_random=r.best_mean - rnd.best_mean)
        if full and r.method != FULL:
            rows[key] = replace(r, final_gap_full=full.final_mean - r.final_mean, best_gap_full=full.best_mean - r.best_mean)
    methods, students = [k[0] for k in groups], [k[2] for k in groups]
    return sorted(rows.values(), key=lambda r: (students.index(r.student), r.ipc or 10**9, methods.index(r.method)))


def draw_spread(draws: dict[str, list]) -> dict:
    """The Row fields of a row's draws (folder -> cells): how many, and the std of their means when more than one."""
    if len(draws) == 1:
        return {}
    spread = {what: mean_std(draw_means(draws, what).values())[1] for what in ("final", "best")}
    return dict(draws=len(draws), final_draw_std=spread["final"], best_draw_std=spread["best"])


COLUMNS = ("method", "IPC", "student", "epochs", "guidance", "final acc %", "best acc %", "vs random final/best",
           "gap to full final/best", "MMD linear", "MMD rbf")
DRAW_COLUMNS = ("draws", "std over draws final/best")  # shown when a row pools several draws
GAP_COLUMNS = ("method", "other", "IPC", "student", "draws", "final gap", "best gap", "ahead (final)")


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


@dataclass(frozen=True)
class Matrix:
    rows: tuple[Row, ...]
    results: tuple[CellResult, ...]
    spec: MatrixSpec | None = None
    features: Features | None = None
    seconds: float = 0.0  # wall clock of the whole evaluation
    noise: dict[str, NoiseKey] | None = None  # folder -> noise key of each generated set (rdistill.evaluate.pairs)

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Generated methods paired draw by draw on the same noise (rdistill.evaluate.pairs)."""
        return paired_gaps(self.results, self.noise or {})

    @property
    def feature_network(self) -> str | None:
        return self.features.network if self.features else None

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS + (DRAW_COLUMNS if any(r.draws > 1 for r in self.rows) else ())

    def cells(self, r: Row, with_draws: bool = False) -> list[str]:
        draws = [str(r.draws), f"{_fmt(r.final_draw_std, '.2f')} / {_fmt(r.best_draw_std, '.2f')}"]
        return [r.method, "all" if r.ipc is None else str(r.ipc), r.student, str(r.epochs), _fmt(r.guidance, "g"),
                f"{r.final_mean:.2f} ± {r.final_std:.2f}", f"{r.best_mean:.2f} ± {r.best_std:.2f}",
                f"{_fmt(r.final_vs_random, '+.2f')} / {_fmt(r.best_vs_random, '+.2f')}",
                f"{_fmt(r.final_gap_full, '.2f')} / {_fmt(r.best_gap_full, '.2f')}",
                _fmt(r.mmd_linear, '.4g'), _fmt(r.mmd_rbf, '.4g')] + (draws if with_draws else [])

    def notes(self) -> list[str]:
        seeds = sorted({r.seeds for r in self.rows})
        out = [f"final = test accuracy after the last epoch; best = the maximum seen during training (what the "
               f"reference reports); mean ± {STD_LABEL}, {'/'.join(map(str, seeds))} seeds",
               "vs random = row - random at the same IPC; gap to full = full train split (hard labels) - row"]
        if DRAW_COLUMNS[0] in self.columns:
            out.append("draws = sets made again with another seed, each tested on every seed: mean ± std pool "
                       "draws x seeds; std over draws = std of the draws' means; MMD = the draws' mean")
        if self.features:
            out.append(f"MMD = squared MMD to the real train split, features of {self.features.network}")
        if self.spec:
            out.insert(0, f"dataset {self.spec.dataset}, protocol {self.spec.protocol}"
                          + (f", epochs overridden to {self.spec.epochs}" if self.spec.epochs else ""))
        return out

    def as_table(self, markdown: bool = False) -> str:
        """The matrix as aligned text (or a Markdown table), with notes saying what each number is; then the
        paired gaps, when generated methods share two or more draws."""
        columns = self.columns
        out = _aligned([list(columns)] + [self.cells(r, len(columns) > len(COLUMNS)) for r in self.rows], markdown)
        out += [""] + [f"- {n}" if markdown else n for n in self.notes()]
        if gaps := self.gaps:  # derived from the results on each call: once here
            out += ["", "paired on the same sampling noise: gap = method - other on each shared draw (its mean over "
                        "the seeds), mean ± std over the shared draws; ahead = draws where method's final is higher",
                    ""]
            out += _aligned([list(GAP_COLUMNS)] + [gap_cells(g) for g in gaps], markdown, left=2)
        return "\n".join(out) + "\n"

    def to_frame(self):
        import pandas as pd

        frame = pd.DataFrame([r.__dict__ for r in self.rows], columns=list(Row.__dataclass_fields__))
        return frame.astype({"ipc": "Int64"})  # <NA> for the full split

    def to_csv(self, path) -> None:
        self.to_frame().to_csv(path, index=False)


def gap_cells(g: Gap) -> list[str]:
    return [g.method, g.other, str(g.ipc), g.student, str(g.draws), f"{g.final_mean:+.2f} ± {g.final_std:.2f}",
            f"{g.best_mean:+.2f} ± {g.best_std:.2f}", f"{g.ahead} of {g.draws}"]


def _aligned(body: list[list[str]], markdown: bool, left: int = 1) -> list[str]:
    """Lines of a table whose first row is its header: columns padded to one width (Markdown: aligned in the raw
    text too), the first `left` (the names) left-aligned and the rest right."""
    widths = [max(len(row[i]) for row in body) for i in range(len(body[0]))]
    lines = [[c.rjust(w) if i >= left else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))] for row in body]
    if markdown:
        lines.insert(1, ["-" * w for w in widths])
        return ["| " + " | ".join(c) + " |" for c in lines]
    return ["  ".join(c) for c in lines]


# Filling it:


def evaluate_matrix(spec: MatrixSpec, workers: int = 0, progress: bool = True, address: str | None = None,
                    options: dict | None = None, keep: str | None = None) -> Matrix:
    """Check the inputs, run every cell (Ray tasks when workers > 0), then the features and MMD. With `keep`
    (a folder or storage URI), each finished cell is kept there and a rerun runs only the cells not kept."""
    from rdistill.distributed.tasks import run_calls
    from rdistill.evaluate.kept import cell_key, keep_result, load_kept

    # Checks, before any work:
    protocol = get_protocol(spec.protocol, spec.epochs)
    data = DataSpec(spec.dataset, spec.root, spec.image_size or protocol.image_size)
    manifests = load_manifests(spec.surrogates)
    check_inputs(spec, load_data(data), manifests, protocol)
    cells = plan_cells(manifests, spec.ipcs, spec.students, spec.seeds, spec.full)

    # The cells not kept before; the full reference of the first student (seed 0) becomes the feature network:
    start = time.perf_counter()
    keys = {i: cell_key(c, data, spec.protocol, spec.epochs, spec.teacher,
                        FULL if c.surrogate == FULL else manifests[c.surrogate].fingerprint())
            for i, c in enumerate(cells)} if keep else {}
    results = load_kept(keep, keys) if keep else {}
    todo = [i for i in range(len(cells)) if i not in results]
    if results:
        print(f"evaluate: {len(results)} of {len(cells)} cells kept in {keep}, {len(todo)} to run")
    keeper = Cell(FULL, None, spec.students[0], 0, FULL) if spec.full else None
    kw = dict(teacher=spec.teacher, device=spec.device)
    calls = [((cells[i], data, spec.protocol, spec.epochs), dict(kw, keep_model=cells[i] == keeper)) for i in todo]

    def finished(j: int, r) -> None:
        results[todo[j]] = r
        if keep:
            keep_result(keep, keys[todo[j]], r)
        bar.update()

    with tqdm(total=len(cells), initial=len(results), desc="evaluate", unit="cell", disable=not progress) as bar:
        run_calls(run_cell, calls, workers=workers, address=address, on_result=finished, options=options)
    results = [results[i] for i in range(len(cells))]
    state = next((r.state for r in results if r.cell == keeper), None)

    # Features and MMD, one task:
    sets = list(dict.fromkeys((c.method, c.ipc, c.surrogate) for c in cells if c.method != FULL))
    call = ((data, sets, spec.students[0], state), {"device": spec.device})
    feats = run_calls(compute_features, [call], workers=min(workers, 1), address=address, options=options)[0]
    results = [replace(r, state=None) for r in results]
    return Matrix(tuple(aggregate(results, feats.mmd)), tuple(results), spec, feats, time.perf_counter() - start,
                  noise_keys(manifests))
