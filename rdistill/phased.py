"""A whole-dataset distillation as one Ray job: encode once, fine-tune phases of classes concurrently,
sample each phase as soon as its model is ready, merge the sets, evaluate with the `rded` protocol.

    job = PhasedJob(dataset="imagenet1k", root="/data/imagenet", dit="DiT-XL-2-256x256.pt", vae="sd-vae-ft-ema",
                    out="s3://bucket/imagenet1k", tracking_uri="http://head:5000")
    run_job(job)          # experiments/imagenet1k.py builds the job from its flags

The graph (every stage skips what an earlier submission finished, so a re-submitted job resumes):
1. latents: the train split's VAE latents into the class-sharded store (rdistill.generate.latent_store, a Ray
   Data pipeline; chunks already there are skipped);
2. phases: `phase_size` classes each (the last may be shorter); each phase is a Ray task that fine-tunes
   its DiT on Ray Train (`fit_ray`, one GPU when the cluster has them) reading only its classes from the
   store, then samples its classes at the largest IPC as per-class Ray tasks (smaller IPCs are prefixes);
   `max_concurrent` phases are in flight, each waiting for the resources it asks;
3. merge: the phases' shards into one set per method (labels renumbered over all classes);
4. teacher: the given ResNet-18 state_dict, or one trained on the real train split (`rdistill teacher`);
5. cells: every (IPC, student, seed) cell, kept as it finishes (rdistill.evaluate.kept); the matrix to MLflow.
The MLflow parent run's `stage` tag says where the job stands; every stage prints one line.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from rdistill import storage
from rdistill.config import RunConfig, load_config


@dataclass(frozen=True)
class PhasedJob:
    dataset: str  # imagenet1k, or imagefolder:PATH (the smoke test's WNID subset)
    root: str | None  # ImageNet root with train/<wnid>/ and val/<wnid>/
    dit: str  # pretrained DiT: a diffusers folder or the original .pt
    vae: str  # AutoencoderKL folder
    out: str  # storage location (a URI, or an absolute folder on one machine): phases, sets, cells, teacher, matrix
    latent_store: str | None = None  # storage location (path or URI) of the latent store; None: <out>/latents
    tracking_uri: str | None = None  # MLflow; None: $MLFLOW_TRACKING_URI, else SQLite in out
    preset: str = "dit-xl/2"
    image_size: int = 256  # SPEC.md section 1
    phase_size: int = 20  # classes per fine-tuned model (the reference's 50 phases of 20)
    ipcs: tuple[int, ...] = (10, 50)
    finetune: tuple[str, ...] = ()  # key=value overrides of the fine-tuning config (the paper's: experiments/)
    sample_steps: int = 50
    guidance: float = 4.0
    sample_workers: int = 8  # sampling tasks in flight per phase
    max_concurrent: int = 8  # phases in flight (each a Ray Train run of one worker)
    encode_actors: int = 8  # VAE actors of the encoding pipeline
    gpus: bool = False  # declared (--gpus): one GPU per phase run, encoder actor and task (wait gpu_wait s for a node)
    gpu_wait: float = 600.0  # seconds to wait for a GPU node (an autoscaler starts one) before refusing
    teacher: str | None = None  # ResNet-18 state_dict; None: train one (teacher_epochs)
    teacher_epochs: int = 90
    student_epochs: int = 300  # the rded protocol's
    students: tuple[str, ...] = ("resnet-18",)
    seeds: int = 3
    eval_image_size: int = 224  # the rded protocol's
    eval_workers: int = 8
    num_cpus: int | None = None  # a local Ray's CPUs (the smoke test); None: Ray's default
    address: str | None = None
    extra: dict = field(default_factory=dict)


def say(message: str) -> None:
    print(f"[imagenet1k {time.strftime('%H:%M:%S')}] {message}", flush=True)


def phases_of(classes, size: int) -> list[tuple[str, ...]]:
    """Consecutive groups of `size` classes; the last holds the rest."""
    if size < 1:
        raise ValueError(f"phase size must be >= 1, got {size}")
    return [tuple(classes[i : i + size]) for i in range(0, len(classes), size)]


def phase_config(job: PhasedJob, k: int, classes) -> RunConfig:
    base = job.dataset
    return load_config(None, [
        f"data.name={base}[{','.join(classes)}]", f"data.image_size={job.image_size}", f"data.codec=vae:{job.vae}",
        f"data.latent_store={job.latent_store or storage.join(job.out, 'latents')}",
        *([f"data.root={job.root}"] if job.root else []),
        f"model.preset={job.preset}", f"model.init={job.dit}", *job.finetune,
        f"out={storage.join(job.out, 'phases', f'phase-{k:03d}')}"])


# 1. Latents:


def encode_latents(job: PhasedJob, dataset) -> str:
    from rdistill.generate import latent_store as ls
    from rdistill.models.codec import codec_identity, load_codec

    store = job.latent_store or storage.join(job.out, "latents")
    codec = load_codec(f"vae:{job.vae}", 3)
    key = ls.store_key(job.dataset, "train", dataset.classes, job.image_size, codec_identity(codec), True)
    folder = ls.prepare(store, key, {"dataset": job.dataset, "split": "train", "image_size": job.image_size,
                                     "codec": codec.spec, "hflip": True, "classes": len(dataset.classes)})
    chunks = ls.plan_chunks(dataset.train, dataset.classes)
    n = ls.encode_store(folder, chunks, codec_spec=codec.spec, image_size=job.image_size, hflip=True,
                        actors=job.encode_actors, gpus_per_actor=1.0 if job.gpus else 0.0, progress=say)
    say(f"latents: {n} of {len(chunks)} chunks encoded now, the rest were in {folder}")
    return folder


# 2. One phase (a Ray task): fine-tune, then sample.


def run_phase(job: PhasedJob, k: int, classes: tuple[str, ...]) -> str:
    from rdistill.distributed.train_ray import fit_ray
    from rdistill.generate.sampling import SampleJob, run_sampling

    cfg = phase_config(job, k, classes)
    done = storage.join(cfg.out, "_FINETUNED")  # written once the run is complete (published, for a URI)
    if not storage.exists(done):
        fit_ray(cfg, num_workers=1, use_gpu=job.gpus, name=f"phase-{k:03d}")
        storage.write_text(done, time.strftime("%Y-%m-%dT%H:%M:%S"))
    out = storage.join(job.out, "sets", f"phase-{k:03d}")
    run_sampling(SampleJob(run_dir=cfg.out, out=out, ipc=max(job.ipcs), steps=job.sample_steps,
                           guidance=job.guidance, chunk_size=max(job.ipcs), workers=job.sample_workers), progress=False)
    return out


def run_phases(job: PhasedJob, phases) -> list[str]:
    import ray

    remote = ray.remote(num_cpus=0.01, max_retries=1)(_phase_task)
    pending, results, queue = {}, {}, list(enumerate(phases))
    while queue or pending:
        while queue and len(pending) < job.max_concurrent:
            k, classes = queue.pop(0)
            pending[remote.remote(job, k, classes)] = k
            say(f"phase {k + 1}/{len(phases)}: {len(classes)} classes ({classes[0]}..{classes[-1]}) submitted")
        ready, _ = ray.wait(list(pending), num_returns=1)
        k = pending.pop(ready[0])
        results[k] = ray.get(ready[0])
        say(f"phase {k + 1}/{len(phases)}: fine-tuned and sampled into {results[k]}")
    return [results[k] for k in range(len(phases))]


def _phase_task(job: PhasedJob, k: int, classes):
    import torch

    torch.set_num_threads(1)
    return run_phase(job, k, classes)


# 3. Merge:


def merge_sets(folders, out: str, classes) -> str:
    """One surrogate set over `classes` from the phases' sets (labels renumbered); skipped when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rdistill.data.shards import MANIFEST_NAME, Manifest, shard_name, write_shard

    parts = [Manifest.load(f) for f in folders]
    source = hashlib.sha256("".join(m.source for m in parts).encode()).hexdigest()[:16]
    model_labels = {c: y for m in parts for c, y in zip(m.classes, m.model_labels)}
    merged = Manifest(list(classes), [model_labels[c] for c in classes], parts[0].ipc, parts[0].method, source,
                      config={"phases": {str(f): m.config for f, m in zip(folders, parts)}})
    if storage.exists(storage.join(out, MANIFEST_NAME)):
        have = Manifest.load(out)
        if have.fingerprint() == merged.fingerprint() and all(have.counts.get(c) == merged.ipc for c in classes):
            return out
    for folder, m in zip(folders, parts):
        for name, s in sorted(m.shards.items()):
            label = list(classes).index(m.classes[s["label"]])
            t = pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(folder, name))))
            t = t.set_column(t.schema.get_field_index("label"), "label", pa.array([label] * t.num_rows, pa.int64()))
            merged.record(write_shard(out, t, shard_name(label, s["chunk"]), classes=list(classes)), label, s["chunk"])
    merged.save(out)
    return out


# 5. Cells:


def run_cells(job: PhasedJob, surrogate: str, teacher: str):
    """Every (IPC, student, seed) cell of the merged set, each kept in <out>/cells as it finishes."""
    from rdistill.data.shards import Manifest
    from rdistill.distributed.tasks import run_calls
    from rdistill.evaluate.cells import Cell, DataSpec, run_cell
    from rdistill.evaluate.kept import cell_key, keep_result, load_kept

    data, folder = DataSpec(job.dataset, job.root, job.eval_image_size), storage.join(job.out, "cells")
    cells = [Cell("minimax", ipc, s, seed, surrogate, job.guidance) for ipc in job.ipcs for s in job.students
             for seed in range(job.seeds)]
    fingerprint = Manifest.load(surrogate).fingerprint()
    keys = {i: cell_key(c, data, "rded", job.student_epochs, teacher, fingerprint) for i, c in enumerate(cells)}
    results = load_kept(folder, keys)
    todo = [i for i in range(len(cells)) if i not in results]
    say(f"evaluation: {len(results)} of {len(cells)} cells done before, {len(todo)} to run")

    def finished(j, r):
        results[todo[j]] = r
        keep_result(folder, keys[todo[j]], r)
        say(f"cell {r.cell.method} ipc {r.cell.ipc} {r.cell.student} seed {r.cell.seed}: {r.final_acc:.2f}%")

    calls = [((cells[i], data, "rded", job.student_epochs), {"teacher": teacher}) for i in todo]
    run_calls(run_cell, calls, workers=job.eval_workers, address=job.address, on_result=finished)
    return [results[i] for i in range(len(cells))]


# The job:


def run_job(job: PhasedJob) -> dict:
    from rdistill import tracking
    from rdistill.data import load_dataset
    from rdistill.distributed.cluster import connect, wait_for_resources
    from rdistill.evaluate.matrix import Matrix, aggregate
    from rdistill.evaluate.cells import DataSpec, MatrixSpec
    from rdistill.evaluate.features import compute_features

    start = time.time()
    storage.check_writable(job.out)  # unreachable, read-only: an error before any work
    connect(job.address, num_cpus=job.num_cpus)
    if job.gpus:  # asked for: a cluster that cannot hold one GPU task is refused in one line
        wait_for_resources({"GPU": 1}, timeout=job.gpu_wait)
    uri = tracking.mlflow_uri(job.out, job.tracking_uri)
    client = tracking.client(uri)
    parent = job_run(client, tracking.experiment_id(client, "imagenet1k"), job)
    stage = lambda s: (say(s), client.set_tag(parent, "stage", s))  # noqa: E731

    dataset = load_dataset(job.dataset, image_size=job.image_size, root=job.root)
    stage(f"encoding {len(dataset.train)} training images of {dataset.num_classes} classes")
    encode_latents(job, dataset)

    phases = phases_of(dataset.classes, job.phase_size)
    short = f"; the last holds {len(phases[-1])}" if len(phases[-1]) != job.phase_size else ""
    stage(f"fine-tuning and sampling {len(phases)} phases of {job.phase_size} classes{short}")
    sets = run_phases(job, phases)

    merged = merge_sets(sets, storage.join(job.out, "sets", f"minimax-ipc{max(job.ipcs)}"), dataset.classes)
    stage(f"merged {len(sets)} phase sets into {merged}")
    teacher = job.teacher or train_teacher_once(job)
    stage(f"evaluating with the rded protocol (teacher {teacher})")
    results = run_cells(job, merged, teacher)
    spec = MatrixSpec(surrogates=(merged,), dataset=job.dataset, root=job.root, students=job.students,
                      seeds=job.seeds, ipcs=job.ipcs, protocol="rded", epochs=job.student_epochs, teacher=teacher,
                      image_size=job.eval_image_size)
    stage("features and MMD on a seeded sample of the real train split")
    feats = compute_features(DataSpec(job.dataset, job.root, job.eval_image_size),
                             [("minimax", ipc, merged) for ipc in job.ipcs], None, None)
    matrix = Matrix(tuple(aggregate(results, feats.mmd)), tuple(results), spec, feats, time.time() - start)
    storage.write_text(storage.join(job.out, "matrix.md"), matrix.as_table(markdown=True))
    matrix_run = tracking.log_matrix(matrix, {"job": asdict(job)}, experiment="imagenet1k", tracking_uri=uri,
                                     out_dir=storage.join(job.out, "matrix"))
    client.set_tag(parent, "matrix_run", matrix_run)
    for r in matrix.rows:
        client.log_metric(parent, f"final_acc.ipc{r.ipc}.{r.student}", r.final_mean)
    stage(f"done in {(time.time() - start) / 60:.1f} min: {storage.join(job.out, 'matrix.md')}")
    client.set_terminated(parent)
    return {"matrix": matrix, "sets": sets, "merged": merged, "parent_run": parent, "tracking_uri": uri}


def job_run(client, experiment: str, job: PhasedJob) -> str:
    """The job's MLflow parent run, found again by the job's fingerprint when a job is re-submitted."""
    what = {k: v for k, v in asdict(job).items() if k not in ("address", "tracking_uri", "max_concurrent")}
    fp = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    found = client.search_runs([experiment], f"tags.job_fingerprint = '{fp}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment, run_name="imagenet1k", tags={"job_fingerprint": fp})
    for k, v in asdict(job).items():
        client.log_param(run.info.run_id, k, str(v)[:500])
    return run.info.run_id


def train_teacher_once(job: PhasedJob) -> str:
    """<out>/teacher/resnet18.pt, trained on the real train split unless it is there (a Ray task)."""
    import ray

    from rdistill.evaluate.teacher import train_teacher

    path = storage.join(job.out, "teacher", "resnet18.pt")
    if not storage.exists(path):
        say(f"teacher: training ResNet-18 for {job.teacher_epochs} epochs on the real train split")
        task = ray.remote(num_cpus=1, num_gpus=1 if job.gpus else 0)(train_teacher)
        ray.get(task.remote(job.dataset, job.root, str(path), image_size=job.eval_image_size,
                            epochs=job.teacher_epochs, device="cuda" if job.gpus else "cpu", workers=0))
    return str(path)


