"""Paired gaps: two generated methods compared draw by draw on the same sampling noise.

Image i of class c draws its noise from (seed, c's model label, i) (rdistill.generate.sampling), so two
generators sampled with one seed start every image from the same noise, whatever their guidance. Their draws pair:
the gap on draw k is one method's mean over the student seeds minus the other's, and the gaps' spread leaves out
the luck of the draw that both share. On Fashion-MNIST's four tops at IPC 10 each of L_d's two forms moves by a
std of 1.7 points from draw to draw, and the gap between them by 0.93 (docs/results.md, section 6).

    gaps = paired_gaps(results, noise_keys(manifests))   # methods with two or more draws in common
    gaps[0].final_mean, gaps[0].final_std, gaps[0].ahead  # e.g. minimax - difffit: +1.96, 2.76, ahead on 3 of 4

Real images pair with nothing: random's selection seed shares nothing with a sampling seed, and herding and
k-center are deterministic (one draw).
"""

from __future__ import annotations

from dataclasses import dataclass

from rdistill.common.stats import mean_std
from rdistill.evaluate.draws import by_draw, draw_means, draw_seed

NoiseKey = tuple  # (seed, ((class, model label), ...)): what fixes a generated set's noise


@dataclass(frozen=True)
class Gap:
    method: str  # the later of the two in the matrix's order
    other: str  # gap = method - other
    ipc: int
    student: str
    draws: int  # the draws the two share
    final_mean: float  # mean over the shared draws of (method - other), each draw's mean over the student seeds
    final_std: float  # population std of those per-draw gaps
    best_mean: float
    best_std: float
    ahead: int  # shared draws on which method's final mean is above other's


def noise_key(m) -> NoiseKey | None:
    """What fixes a generated set's noise: its seed and each written class's model label. None for real images."""
    if "sampling" not in (m.config or {}):
        return None
    written = sorted(m.counts) if m.counts else list(m.classes)
    return draw_seed(m), tuple((c, m.model_labels[m.classes.index(c)]) for c in written)


def noise_keys(manifests: dict) -> dict[str, NoiseKey]:
    """folder -> noise key, for the generated sets among manifests (folder -> Manifest)."""
    return {str(f): k for f, m in manifests.items() if (k := noise_key(m)) is not None}


def noise_means(results, keys: dict[str, NoiseKey]) -> dict[tuple, dict[NoiseKey, tuple[float, float]]]:
    """(method, ipc, student) -> {noise key: (final, best) mean over that draw's student seeds}, for the draws of
    generated sets (those with a key)."""
    out = {}
    for row, draws in by_draw(results).items():
        drawn = {folder: cells for folder, cells in draws.items() if folder in keys}
        if drawn:
            final, best = draw_means(drawn, "final"), draw_means(drawn, "best")
            out[row] = {keys[folder]: (final[folder], best[folder]) for folder in drawn}
    return out


def paired_gaps(results, keys: dict[str, NoiseKey], min_draws: int = 2) -> tuple[Gap, ...]:
    """Every pair of generated methods at one IPC and student that share at least min_draws draws, in the order
    the methods first appear in results (gap = later - earlier)."""
    means = noise_means(results, keys)
    rows = list(means)
    gaps = []
    for j, (method, ipc, student) in enumerate(rows):
        for other, ipc2, student2 in rows[:j]:
            if (ipc2, student2) != (ipc, student) or other == method:
                continue
            a, b = means[method, ipc, student], means[other, ipc, student]
            shared = [k for k in b if k in a]
            if len(shared) < min_draws:
                continue
            final = [a[k][0] - b[k][0] for k in shared]
            (fm, fs), (bm, bs) = mean_std(final), mean_std([a[k][1] - b[k][1] for k in shared])
            gaps.append(Gap(method, other, ipc, student, len(shared), fm, fs, bm, bs, sum(g > 0 for g in final)))
    students = list(dict.fromkeys(student for _, _, student in rows))
    return tuple(sorted(gaps, key=lambda g: (students.index(g.student), g.ipc)))  # stable: method order kept
