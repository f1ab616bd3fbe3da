"""The evaluation matrix's rows: (method, IPC, student) over seeds, mean +- std of the final and best
accuracy, the relative metrics, and the matrix as text, Markdown, pandas and CSV.

`final` = test accuracy after the last epoch; `best` = the maximum seen during training (what the reference
implementations report). Std is the population std (ddof 0). `vs random` = row - the random set at the same
IPC and student; `gap to full` = the whole real train split (hard labels) - row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

FULL = "full"  # method and surrogate name of the whole-real-train-split reference


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


def mean_std(values) -> tuple[float, float]:
    """Mean and population std (ddof 0) of a non-empty list."""
    if len(values) == 0:
        raise ValueError("mean_std of no values")
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5


def aggregate(results, mmd: dict | None = None) -> list[Row]:
    """Rows (method, ipc, student) over seeds, with relative metrics and MMD; students, then IPC, then method."""
    groups: dict[tuple, list] = {}
    for r in results:
        groups.setdefault((r.cell.method, r.cell.ipc, r.cell.student), []).append(r)
    rows = {}
    for (method, ipc, student), rs in groups.items():
        (fm, fs), (bm, bs) = mean_std([r.final_acc for r in rs]), mean_std([r.best_acc for r in rs])
        d = (mmd or {}).get((method, ipc), {})
        rows[method, ipc, student] = Row(method, ipc, student, len(rs), max(r.epochs for r in rs), fm, fs, bm, bs,
                                         mmd_linear=d.get("linear"), mmd_rbf=d.get("rbf"))
    for key, r in rows.items():
        rnd, full = rows.get(("random", r.ipc, r.student)), rows.get((FULL, None, r.student))
        if rnd and r.method != "random" and r.ipc is not None:
            rows[key] = r = replace(r, final_vs_random=r.final_mean - rnd.final_mean,
                                    best_vs_random=r.best_mean - rnd.best_mean)
        if full and r.method != FULL:
            rows[key] = replace(r, final_gap_full=full.final_mean - r.final_mean, best_gap_full=full.best_mean - r.best_mean)
    methods, students = [k[0] for k in groups], [k[2] for k in groups]
    return sorted(rows.values(), key=lambda r: (students.index(r.student), r.ipc or 10**9, methods.index(r.method)))


COLUMNS = ("method", "IPC", "student", "epochs", "final acc %", "best acc %", "vs random final/best",
           "gap to full final/best", "MMD linear", "MMD rbf")


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


@dataclass(frozen=True)
class Matrix:
    rows: tuple[Row, ...]
    results: tuple[CellResult, ...]
    spec: MatrixSpec | None = None
    features: Features | None = None
    seconds: float = 0.0  # wall clock of the whole evaluation

    @property
    def feature_network(self) -> str | None:
        return self.features.network if self.features else None

    def cells(self, r: Row) -> list[str]:
        return [r.method, "all" if r.ipc is None else str(r.ipc), r.student, str(r.epochs),
                f"{r.final_mean:.2f} ± {r.final_std:.2f}", f"{r.best_mean:.2f} ± {r.best_std:.2f}",
                f"{_fmt(r.final_vs_random, '+.2f')} / {_fmt(r.best_vs_random, '+.2f')}",
                f"{_fmt(r.final_gap_full, '.2f')} / {_fmt(r.best_gap_full, '.2f')}",
                _fmt(r.mmd_linear, '.4g'), _fmt(r.mmd_rbf, '.4g')]

    def notes(self) -> list[str]:
        seeds = sorted({r.seeds for r in self.rows})
        out = [f"final = test accuracy after the last epoch; best = the maximum seen during training (what the "
               f"reference reports); mean ± std (population) over {'/'.join(map(str, seeds))} seeds",
               "vs random = row - random at the same IPC; gap to full = full train split (hard labels) - row"]
        if self.features:
            out.append(f"MMD = squared MMD to the real train split, features of {self.features.network}")
        if self.spec:
            out.insert(0, f"dataset {self.spec.dataset}, protocol {self.spec.protocol}"
                          + (f", epochs overridden to {self.spec.epochs}" if self.spec.epochs else ""))
        return out

    def as_table(self, markdown: bool = False) -> str:
        """The matrix as aligned text (or a Markdown table), with notes saying what each number is."""
        body = [list(COLUMNS)] + [self.cells(r) for r in self.rows]
        widths = [max(len(row[i]) for row in body) for i in range(len(COLUMNS))]
        lines = [[c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))] for row in body]
        if markdown:  # aligned in the raw text too
            lines.insert(1, ["-" * w for w in widths])
            return "\n".join(["| " + " | ".join(c) + " |" for c in lines] + [""] + [f"- {n}" for n in self.notes()]) + "\n"
        return "\n".join(["  ".join(c) for c in lines] + [""] + self.notes()) + "\n"

    def to_frame(self):
        import pandas as pd

        frame = pd.DataFrame([r.__dict__ for r in self.rows], columns=list(Row.__dataclass_fields__))
        return frame.astype({"ipc": "Int64"})  # <NA> for the full split

    def to_csv(self, path) -> None:
        self.to_frame().to_csv(path, index=False)
