"""The study's coresets and its matrix on the real test split, kept part by part and cell by cell."""

from __future__ import annotations

import time
from dataclasses import replace

from rdistill import storage
from rdistill.study.settings import StudySettings, log_minutes


def select_all(s: StudySettings) -> list[str]:
    from rdistill.data import load_dataset
    from rdistill.generate.select import select_coreset

    dataset, folders = load_dataset(s.target), []
    for method in s.coresets:
        folders.append(storage.join(s.out, "sets", method))
        select_coreset(dataset, method, max(s.ipcs), 0, folders[-1])
    return folders


def evaluate_all(s: StudySettings, best: dict, coresets: list[str], address: str | None, drawn: dict | None = None):
    """The matrix: at each IPC the methods' chosen sets and the coresets, the ablations apart, then the full-data
    bound; each part is kept in <out>/matrix/parts, and a rerun evaluates only the parts not done yet. `drawn`:
    a set's folder -> its further draws (rdistill.study.draws), evaluated beside it and pooled into its row."""
    from rdistill.evaluate.cells import MatrixSpec, load_manifests
    from rdistill.evaluate.matrix import Matrix, aggregate
    from rdistill.evaluate.pairs import noise_keys

    def part(ipc: int, ablation: bool, extra: list[str]) -> MatrixSpec:
        chosen = [str(folder) for (method, k), (_, _, folder) in best.items()
                  if k == ipc and (method in s.ablation) == ablation]
        folders = [str(f) for first in chosen + extra for f in [first, *(drawn or {}).get(first, [])]]
        return MatrixSpec(tuple(folders), s.target, seeds=s.seeds, ipcs=(ipc,), epochs=s.student_epochs)

    specs = {f"evaluate ipc {ipc}": part(ipc, False, [str(c) for c in coresets]) for ipc in s.ipcs}
    specs |= {f"evaluate ipc {ipc} ablation": part(ipc, True, []) for ipc in s.ablation_ipcs if s.ablation}
    if s.full_epochs is not None:
        specs["evaluate full"] = MatrixSpec((), s.target, seeds=s.seeds, full=True, epochs=s.full_epochs)
    parts = [evaluate_part(s, name, spec, address) for name, spec in specs.items()]
    results = [r for m in parts for r in m.results]
    mmd = {k: v for m in parts if m.features for k, v in m.features.mmd.items()}
    sets = {k: v for m in parts if m.features for k, v in m.features.sets.items()}
    features = replace(parts[0].features, sets=sets, mmd=mmd)
    spec = replace(parts[0].spec, ipcs=tuple(s.ipcs), full=s.full_epochs is not None,
                   surrogates=tuple(dict.fromkeys(x for m in parts for x in m.spec.surrogates)))
    noise = noise_keys(load_manifests(spec.surrogates))
    return Matrix(tuple(aggregate(results, mmd)), tuple(results), spec, features, sum(m.seconds for m in parts), noise)


def evaluate_part(s: StudySettings, name: str, spec, address: str | None):
    """One part of the matrix, evaluated once: kept as <out>/matrix/parts/<name>.pkl with its spec, and reused
    while the spec is the same; each finished cell is kept in <out>/matrix/cells, so a stopped part loses none."""
    import pickle

    from rdistill.evaluate.matrix import evaluate_matrix

    path = storage.join(s.out, "matrix", "parts", f"{name.replace(' ', '-')}.pkl")
    if storage.exists(path):
        kept = pickle.loads(storage.read_bytes(path))
        if kept.spec == spec:
            print(f"[study] {name}: kept in {path}")
            return kept
    start = time.perf_counter()
    matrix = evaluate_matrix(spec, workers=s.workers, address=address, keep=storage.join(s.out, "matrix", "cells"))
    storage.write_bytes(path, pickle.dumps(matrix))
    log_minutes(s, name, start)
    return matrix


def score_fidelity(s: StudySettings, sets: dict, coresets: list[str]) -> None:
    """How often a network trained on the real train split recognises each set's images as their class
    (<out>/fidelity.json): every generated set of the guidance grid, and the coresets."""
    from rdistill.evaluate.cells import DataSpec
    from rdistill.evaluate.fidelity import fidelity_table

    named = {f"{m} guidance {g:g}": f for (m, g), f in sets.items()} | dict(zip(s.coresets, coresets))
    table = fidelity_table(storage.join(s.out, "fidelity.json"), named, DataSpec(s.target), max(s.ipcs),
                           s.judge_epochs)
    print("[study] fidelity (% of a set's images a real-trained judge assigns to their class): " +
          ", ".join(f"{k} {v['all']:.1f}" for k, v in table["sets"].items()))
