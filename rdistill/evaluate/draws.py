"""Draws: one surrogate set made again with another seed (other sampling noise, another random selection), so
that a row of the matrix pools the set's own luck with the students'. On Fashion-MNIST a draw moves a 4-class
IPC-10 set by up to 5-6 points, far more than the students' seeds do (docs/results.md, section 2).

    group_draws({"sets/minimax": m0, "sets/minimax-seed1": m1}, ipc=10)   # checks they are draws of one set
    draw_seed(m1)                                                          # 1
    by_draw(matrix.results)[("minimax", 10, "convnet-3")]                  # {folder: its cells, one per seed}

Two sets are draws of one set when their manifests agree on everything that defines a set except the seed, the
IPC (a smaller IPC is a prefix of a larger set: an image's noise depends on the seed, its class and its index) and
where the run or base lived: the same method and classes, the same generator weights (their hash), the same
sampling or selection settings.
"""

from __future__ import annotations

import copy

from rdistill.common.stats import mean_std

LOCATIONS = (("run", "out"), ("base", "path"))  # where a run or base lived: not what the images are


def draw_seed(m) -> int | None:
    """The seed that made this set: rdistill sample's noise seed, or rdistill select's (random) seed."""
    config = m.config or {}
    return config["sampling"].get("seed") if "sampling" in config else config.get("seed")


def definition(m) -> dict:
    """What makes the set what it is, less its draw: the manifest without its seed, its IPC, the picks a seed
    made, and the places its run and base were read from."""
    config = copy.deepcopy(m.config or {})
    for key in ("seed", "ipc"):
        config.get("sampling", {}).pop(key, None)
    for key in ("seed", "selected"):
        config.pop(key, None)
    for outer, inner in LOCATIONS:
        if isinstance(config.get(outer), dict):
            config[outer].pop(inner, None)
    return {"classes": m.classes, "model_labels": m.model_labels, "method": m.method, "source": m.source,
            "config": config}


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts differ (e.g. ["config.sampling.guidance"])."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix or "value"]
    keys = sorted(set(a) | set(b))
    return [d for k in keys for d in differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))]


def group_draws(manifests: dict, ipc: int) -> list[str]:
    """The folders of several sets of one method at one IPC, after checking that they are draws of one set
    (ValueError naming the two folders and what differs, or the seed they share)."""
    folders = list(manifests)
    first, ref = folders[0], definition(manifests[folders[0]])
    seeds = {}
    for folder in folders:
        m = manifests[folder]
        if diff := differences(ref, definition(m)):
            raise ValueError(f"{first} and {folder} are both method {m.method!r} at IPC {ipc} but not draws of one "
                             f"set: they differ in {', '.join(diff)} (evaluate them apart, or name the methods apart)")
        seed = draw_seed(m)
        if seed in seeds:
            raise ValueError(f"{seeds[seed]} and {folder} are both method {m.method!r} at IPC {ipc} and the same "
                             f"draw (seed {seed}): give each draw its own seed (rdistill sample/select --seed)")
        seeds[seed] = folder
    return folders


def by_draw(results) -> dict[tuple, dict[str, list]]:
    """(method, ipc, student) -> {surrogate folder: its cells (one per student seed)}, in the order of results."""
    out: dict[tuple, dict[str, list]] = {}
    for r in results:
        out.setdefault((r.cell.method, r.cell.ipc, r.cell.student), {}).setdefault(r.cell.surrogate, []).append(r)
    return out


def draw_means(draws: dict[str, list], what: str = "final") -> dict[str, float]:
    """folder -> the draw's mean accuracy over its student seeds (what: "final" or "best")."""
    return {folder: mean_std([getattr(r, f"{what}_acc") for r in rs])[0] for folder, rs in draws.items()}
