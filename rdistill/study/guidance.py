"""Guidance chosen on validation: each generated method sampled at every scale of its grid, a student per
(method, scale, IPC) trained on the set and tested on the carve of the target's train split."""

from __future__ import annotations

import time

from rdistill import storage
from rdistill.common.devices import resolve_device
from rdistill.study.settings import StudySettings, grid_of, log_minutes


def sample_grid(s: StudySettings, runs: dict[str, str], classes: tuple[str, ...]) -> dict[tuple[str, float], str]:
    """(method, guidance) -> a set of max(ipcs) images per target class; smaller IPCs are its prefixes."""
    sets = {}
    for method, run in runs.items():
        for g in grid_of(s, method)[0]:
            folder = storage.join(s.out, "sets", method, f"guidance-{g:g}")
            sets[method, g] = sample_set(s, run, method, g, s.sample_seed, folder, classes)
    return sets


def sample_set(s: StudySettings, run: str, method: str, g: float, seed: int, folder: str,
               classes: tuple[str, ...]) -> str:
    """One set of max(ipcs) images per class at guidance g, its noise seeded by `seed` (complete: skipped)."""
    from rdistill.generate.sampling import SampleJob, run_sampling

    job = SampleJob(run_dir=str(run), out=str(folder), ipc=max(s.ipcs), seed=seed, steps=s.sample_steps, guidance=g,
                    classes=classes)
    start = time.perf_counter()
    run_sampling(job, progress=False)
    log_minutes(s, f"sample {method} guidance {g:g}" + (f" seed {seed}" if seed != s.sample_seed else ""), start)
    return folder


def validate(s: StudySettings, folder: str, ipc: int, seed: int = 0) -> float:
    """Final accuracy (%) of a student trained on the first `ipc` images per class of the set and tested
    on the validation carve of the target's train split."""
    from rdistill.data.validation import validation_split
    from rdistill.evaluate.cells import DataSpec, load_data, train_tensors
    from rdistill.evaluate.protocols import epochs_for, get_protocol
    from rdistill.evaluate.training import train_and_test

    protocol = get_protocol("small", s.val_epochs)
    spec = DataSpec(s.target)
    x, y = train_tensors(spec, str(folder), ipc)
    data = load_data(spec)
    carve = validation_split(data, s.val_fraction).test
    epochs = epochs_for(protocol, ipc)
    r = train_and_test(protocol.students[0], protocol, x, y, carve.images(range(len(carve))), carve.labels,
                       num_classes=data.num_classes, seed=seed, device=resolve_device("auto"),
                       epochs=epochs, eval_every=epochs)  # one test, at the end: only the final accuracy counts
    return r["final_acc"]


def choose_guidance(s: StudySettings, sets: dict[tuple[str, float], str], address: str | None = None) -> dict:
    """Validation accuracy of every (method, guidance, IPC) (kept in validation.json, each as it lands; students
    run as `s.workers` Ray tasks) and, for each (method, IPC), the guidance with the best one."""
    from rdistill.distributed.tasks import run_calls

    path = storage.join(s.out, "validation.json")
    table = storage.read_json(path)
    todo = [(f"{m}|{g:g}|{ipc}", folder, ipc) for (m, g), folder in sets.items() for ipc in grid_of(s, m)[1]
            if f"{m}|{g:g}|{ipc}" not in table]

    def record(i: int, acc: float) -> None:
        table[todo[i][0]] = acc
        storage.write_json(path, table)

    start = time.perf_counter()
    run_calls(validate, [((s, folder, ipc), {}) for _, folder, ipc in todo], workers=s.workers, address=address,
              on_result=record)
    log_minutes(s, "validate guidance", start)
    best = {}
    for (method, g), folder in sets.items():
        for ipc in grid_of(s, method)[1]:
            acc = table[f"{method}|{g:g}|{ipc}"]
            if (method, ipc) not in best or acc > best[method, ipc][1]:
                best[method, ipc] = (g, acc, folder)
    return best
