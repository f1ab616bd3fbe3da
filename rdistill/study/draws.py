"""Draws: each chosen generated set and the random coreset made again with other seeds (`draws` sets in all),
so that each row of the matrix pools a set's own luck with the students' (rdistill.evaluate.draws). Guidance is
chosen on the first draw; herding and k-center pick the same images whatever the seed: one draw each."""

from __future__ import annotations

from rdistill import storage
from rdistill.study.guidance import sample_set
from rdistill.study.settings import StudySettings

RESEEDED = ("random",)  # the coresets whose picks depend on the seed


def draw_seeds(s: StudySettings, first: int) -> range:
    """The seeds of the draws after the first (made with seed `first`)."""
    return range(first + 1, first + s.draws)


def sample_draws(s: StudySettings, runs: dict[str, str], best: dict, classes: tuple[str, ...]) -> dict[str, list]:
    """first draw's folder -> the folders of its further draws, for every (method, guidance) some IPC chose."""
    chosen = dict.fromkeys((method, g, folder) for (method, _), (g, _, folder) in sorted(best.items()))
    return {folder: [sample_set(s, runs[method], method, g, seed, f"{folder}-seed{seed}", classes)
                     for seed in draw_seeds(s, s.sample_seed)] for method, g, folder in chosen}


def select_draws(s: StudySettings, coresets: list[str]) -> dict[str, list]:
    """first draw's folder -> the folders of its further draws, for the coresets whose picks a seed makes
    (made with seed 0 by rdistill.study.evaluation.select_all)."""
    from rdistill.data import load_dataset
    from rdistill.generate.select import select_coreset

    reseeded = [(method, folder) for method, folder in zip(s.coresets, coresets) if method in RESEEDED]
    if s.draws == 1 or not reseeded:
        return {}  # nothing to draw again: the dataset (an ImageNet folder scan) is not read
    dataset, out = load_dataset(s.target), {}
    for method, folder in reseeded:
        again = {seed: storage.join(s.out, "sets", f"{method}-seed{seed}") for seed in draw_seeds(s, 0)}
        for seed, f in again.items():
            select_coreset(dataset, method, max(s.ipcs), seed, f)
        out[folder] = list(again.values())
    return out
