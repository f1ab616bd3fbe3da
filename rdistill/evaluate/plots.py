"""Figures of an evaluation matrix (rdistill.evaluate.matrix), written as PNG files with matplotlib's Agg backend.

- accuracy vs IPC, one figure per student: a line per method, best (solid) and final (dashed), mean ± std
  over seeds as error bars, the full-data result as a horizontal line;
- a sample grid per surrogate set: the first images of each class (a row per class; at most GRID_MAX_CLASSES
  rows, a seeded subset of the classes when the set has more, e.g. ImageNet-1K's 1000);
- t-SNE of real vs surrogate features (the paper's Fig. 3): one panel per method at its largest IPC;
- the draws at each IPC where a set was drawn more than once: a dot per draw, lines joining the draws of
  generated methods that share their noise (rdistill.evaluate.pairs).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rdistill.common.stats import mean_std  # noqa: E402

GRID_PER_CLASS = 10  # images per class in a sample grid
GRID_MAX_CLASSES = 20  # rows of a sample grid: 1000 rows would be ~72 k px high, over Agg's limit
GRID_SEED = 0  # which classes a grid of a larger set shows
TSNE_MAX_REAL = 1000  # real points in a t-SNE panel (evenly spaced over the train split)
DPI = 120


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_ipc(rows, student: str, path) -> Path:
    """Test accuracy vs IPC of one student: best (solid) and final (dashed) mean ± std per method."""
    rows = [r for r in rows if r.student == student]
    fig, ax = plt.subplots(figsize=(6, 4))
    ipcs = sorted({r.ipc for r in rows if r.ipc is not None})
    for k, method in enumerate(dict.fromkeys(r.method for r in rows if r.ipc is not None)):
        rs = sorted((r for r in rows if r.method == method), key=lambda r: r.ipc)
        x, color = [r.ipc for r in rs], f"C{k}"
        ax.errorbar(x, [r.best_mean for r in rs], [r.best_std for r in rs], color=color, marker="o", capsize=3,
                    label=f"{method} (best)")
        ax.errorbar(x, [r.final_mean for r in rs], [r.final_std for r in rs], color=color, marker="x", capsize=3,
                    linestyle="--", alpha=0.7, label=f"{method} (final)")
    for r in rows:
        if r.ipc is None:
            ax.axhline(r.best_mean, color="k", linewidth=1, label=f"{r.method} train split (best)")
            ax.axhline(r.final_mean, color="k", linewidth=1, linestyle="--", label=f"{r.method} train split (final)")
    if ipcs:
        ax.set_xscale("log")
        ax.set_xticks(ipcs, [str(i) for i in ipcs])
        ax.minorticks_off()
    ax.set(xlabel="images per class", ylabel="test accuracy (%)", title=f"{student}: best = max during training, "
           "final = last epoch")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sample_grid(folder, path, per_class: int = GRID_PER_CLASS) -> Path:
    """The first `per_class` images of every class of a surrogate set, a row per class."""
    from rdistill.data.shards import Manifest, read_surrogate

    m = Manifest.load(folder)
    shown = grid_classes(len(m.classes))
    s = read_surrogate(folder, min(per_class, m.ipc), classes=shown)
    x, y = s.tensors()  # (N, C, H, W) in [-1, 1], y = the set's class index
    y = torch.tensor([shown.index(int(v)) for v in y])  # the grid's row
    n_cls, n = len(shown), min(per_class, m.ipc)
    fig, axes = plt.subplots(n_cls, n, figsize=(n * 0.6 + 0.8, n_cls * 0.6 + 0.4), squeeze=False)
    for k in range(n_cls):
        imgs = x[y == k]
        for i in range(n):
            ax = axes[k, i]
            ax.set_xticks([]), ax.set_yticks([])
            if i < len(imgs):
                img = ((imgs[i] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
                ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
        axes[k, 0].set_ylabel(m.classes[shown[k]], rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    subset = "" if n_cls == len(m.classes) else f"; {n_cls} of {len(m.classes)} classes, seed {GRID_SEED}"
    fig.suptitle(f"{m.method}, IPC {m.ipc} ({folder}{subset})", fontsize=8)
    return _save(fig, path)


def grid_classes(k: int, max_classes: int = GRID_MAX_CLASSES) -> list[int]:
    """The class indices a sample grid shows: all of k, or a seeded sorted subset of max_classes."""
    if k <= max_classes:
        return list(range(k))
    return sorted(torch.randperm(k, generator=torch.Generator().manual_seed(GRID_SEED))[:max_classes].tolist())


def class_colors(labels, k: int) -> np.ndarray:
    """(n, 4) RGBA per label: tab10 up to 10 classes, else k distinct hues of a cyclic map (no repeats)."""
    labels = np.asarray(labels)
    if k <= 10:
        return plt.get_cmap("tab10")(labels)
    return plt.get_cmap("hsv", k + 1)(labels)  # k + 1 entries: hsv is cyclic, its first and last are both red


def tsne_plot(features, path, seed: int = 0, max_real: int | None = None) -> Path:
    """Real (grey) vs surrogate (coloured by class) features, t-SNE per method at its largest IPC;
    at most `max_real` real points (default TSNE_MAX_REAL)."""
    from rdistill.evaluate.metrics import tsne_embedding

    max_real = max_real or TSNE_MAX_REAL
    largest = {}
    for method, ipc in features.sets:
        largest[method] = max(ipc, largest.get(method, ipc))
    real = features.real[torch.linspace(0, len(features.real) - 1, min(max_real, len(features.real))).long()]
    fig, axes = plt.subplots(1, len(largest), figsize=(4 * len(largest), 4), squeeze=False)
    for ax, (method, ipc) in zip(axes[0], largest.items()):
        f, y = features.sets[method, ipc]
        z = tsne_embedding(torch.cat([real, f]), seed)  # (n_real + n, 2)
        ax.scatter(z[: len(real), 0], z[: len(real), 1], s=3, c="0.75", label="real")
        ax.scatter(z[len(real):, 0], z[len(real):, 1], s=14, c=class_colors(y, int(max(y)) + 1 if len(y) else 1),
                        edgecolors="k", linewidths=0.3, label=f"{method} (colour = class)")
        ax.set(title=f"{method}, IPC {ipc}", xticks=[], yticks=[])
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"t-SNE of features ({features.network})", fontsize=9)
    return _save(fig, path)


def draws_plot(results, noise: dict, ipc: int, student: str, path) -> Path:
    """Each method's draws at one IPC: a dot per draw (final accuracy, mean ± std over the student seeds), a bar at
    the draws' mean; grey lines join the draws that share their noise (`noise`: folder -> noise key)."""
    from rdistill.evaluate.draws import by_draw, draw_means

    per_draw = {method: draws for (method, k, s), draws in by_draw(results).items() if (k, s) == (ipc, student)}
    fig, ax = plt.subplots(figsize=(1.3 * len(per_draw) + 2, 4))
    joined: dict[tuple, list[tuple[int, float]]] = {}  # noise key -> (x, mean) of the methods drawn with it
    for x, (method, draws) in enumerate(per_draw.items()):
        means = draw_means(draws)
        spread = [mean_std([r.final_acc for r in cells])[1] for cells in draws.values()]
        ax.errorbar([x] * len(draws), list(means.values()), spread, fmt="o", color=f"C{x}", capsize=2, markersize=4)
        ax.hlines(mean_std(means.values())[0], x - 0.2, x + 0.2, color=f"C{x}", linewidth=2)
        for folder, m in means.items():
            if folder in noise:
                joined.setdefault(noise[folder], []).append((x, m))
    for points in joined.values():
        if len(points) > 1:
            ax.plot(*zip(*points), color="0.6", linewidth=0.8, zorder=0)
    ax.set_xticks(range(len(per_draw)), list(per_draw), rotation=20, fontsize=8)
    ax.set(ylabel="final test accuracy (%)", title=f"{student}, IPC {ipc}: a dot per draw (mean ± std over seeds), "
           "bar = mean of the draws,\ngrey lines join draws of the same sampling noise")
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def write_plots(matrix, folder) -> list[Path]:
    """Every figure of the matrix into folder: accuracy-vs-IPC-<student>.png, samples-<method>.png, tsne.png,
    and draws-ipc<k>-<student>.png where a set was drawn more than once."""
    from rdistill.evaluate.cells import FULL

    folder = Path(folder)
    out = [accuracy_vs_ipc(matrix.rows, s, folder / f"accuracy-vs-ipc-{s}.png")
           for s in dict.fromkeys(r.student for r in matrix.rows)]
    sets = {}  # method -> its first set (of several: its first draw, or its first IPC's)
    for c in (r.cell for r in matrix.results if r.cell.surrogate != FULL):
        sets.setdefault(c.method, c.surrogate)
    out += [sample_grid(surrogate, folder / f"samples-{method}.png") for method, surrogate in sets.items()]
    if matrix.features is not None and matrix.features.sets:
        out.append(tsne_plot(matrix.features, folder / "tsne.png"))
    drawn = sorted({(r.ipc, r.student) for r in matrix.rows if r.draws > 1})
    out += [draws_plot(matrix.results, matrix.noise or {}, ipc, s, folder / f"draws-ipc{ipc}-{s}.png")
            for ipc, s in drawn]
    return out
