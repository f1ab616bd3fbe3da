"""ImageNet-1K distilled as one Ray job (the paper's Table 4 column: IPC 10 and 50, RDED protocol).

    ray job submit --working-dir . -- python experiments/imagenet1k.py --root /data/imagenet \\
        --dit /models/DiT-XL-2-256x256.pt --vae /models/sd-vae-ft-ema --gpus --out s3://bucket/imagenet1k \\
        --tracking-uri http://<head private IP>:5000
    python experiments/imagenet1k.py --smoke-test      # the whole graph on a local Ray, tiny models, ~minutes

What runs (rdistill.phased): the train split's latents are encoded once into a class-sharded store (a Ray
Data pipeline, VAE actors on GPUs); the 1000 classes are fine-tuned in phases of --phase-size classes,
as many phases at once as the cluster holds (one Ray Train run and one GPU each); each phase is sampled
as per-class Ray tasks as soon as its model is ready (IPC 10 is the prefix of IPC 50); the phase sets are
merged; ResNet-18 students are trained with the teacher's soft labels and tested on val; the matrix goes
to MLflow. A re-submitted job skips finished chunks, phases, shards and cells. Storage: --out is a storage
URI on a cluster (phases are published Ray Train runs, sets, cells, teacher and matrix are objects under it;
nodes keep only scratch), or a folder on one machine; --latent-store puts the latents elsewhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python experiments/imagenet1k.py` from a checkout

# Fine-tuning at ImageNet scale, as the paper (SPEC.md section 1), not the digits defaults: minimax criteria
# with lambda_r 0.002, lambda_d 0.008, N_M 64; AdamW 1e-3, batch 8, 8 epochs over the phase's ~26 k images
# (20 classes x ~1300: ~3250 steps per epoch, ~26 k steps per phase); EMA 0.9999 every step.
FINETUNE = ("train.method=minimax", "train.lambda_r=0.002", "train.lambda_d=0.008", "train.memory_size=64",
            "train.epochs=8", "train.batch_size=8", "train.lr=0.001", "train.ema_decay=0.9999",
            "train.ckpt_every=2000", "train.log_every=500")
# The rded protocol (SPEC.md section 5): ResNet-18 students, 300 epochs, 3 seeds, at 224 px.
EVALUATION = dict(students=("resnet-18",), student_epochs=300, seeds=3, eval_image_size=224)
# Sampling (SPEC.md section 3): 50 respaced steps, guidance 4.0.
SAMPLING = dict(sample_steps=50, guidance=4.0)

# --smoke-test: a stated subset of 6 WNIDs (the first of the sorted 1000), 2 train and 1 val image of 16 px
# each; a random dit-tiny in the original .pt layout (1000 classes) and a random 2-level SD-format VAE
# (16 px -> 4x8x8 latents); phases of 4 classes (the second holds 2); 2 fine-tuning steps; IPC 1 and 2;
# 2 sampling steps; a teacher trained 1 epoch; 1 student epoch, 1 seed.
SMOKE_WNIDS, SMOKE_SIZE = 6, 16
SMOKE_FINETUNE = ("train.max_steps=2", "train.batch_size=2", "train.ckpt_every=2", "train.log_every=1")


def smoke_inputs(folder: Path) -> dict:
    """Write the synthetic ImageNet-shaped tree and the tiny models (kept: a rerun reuses them)."""
    from rdistill.data.imagenet import IMAGENET_WNIDS
    from tests.tiny_models import random_dit, save_original_dit, save_tiny_vae, write_wnid_folder

    root, dit, vae = folder / "imagenet", folder / "dit-tiny.pt", folder / "vae"
    if not root.exists():
        write_wnid_folder(root, IMAGENET_WNIDS[:SMOKE_WNIDS], per_class=2, val_per_class=1, size=SMOKE_SIZE)
    if not dit.exists():
        save_original_dit(dit, random_dit("dit-tiny", sample_size=SMOKE_SIZE // 2, in_channels=4, num_classes=1000))
    if not vae.exists():
        save_tiny_vae(vae)
    return {"root": str(root), "dit": str(dit), "vae": str(vae)}


def local_ray() -> str | None:
    """A fresh local Ray for the smoke test ("local": not another `ray start` of this machine), unless the job
    runs under `ray job submit` (RAY_ADDRESS set: join that cluster)."""
    return None if os.environ.get("RAY_ADDRESS") else "local"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="ImageNet root: train/<wnid>/ and val/<wnid>/ (all 1000 classes)")
    p.add_argument("--dit", help="pretrained DiT-XL/2 256: a diffusers folder or the original DiT-XL-2-256x256.pt")
    p.add_argument("--vae", help="AutoencoderKL folder (sd-vae-ft-ema)")
    p.add_argument("--out", default="runs/imagenet1k",
                   help="the job's storage: a URI on a cluster (s3://bucket/imagenet1k, with --tracking-uri) or a folder")
    p.add_argument("--latent-store", default=None, help="latent store location, path or URI (default <out>/latents)")
    p.add_argument("--tracking-uri", default=None, help="MLflow server (default $MLFLOW_TRACKING_URI, else SQLite)")
    p.add_argument("--ipc", type=int, nargs="+", default=[10, 50], help="images per class (default 10 50)")
    p.add_argument("--phase-size", type=int, default=20, help="classes per fine-tuned model (default 20)")
    p.add_argument("--teacher", default=None, help="ResNet-18 state_dict (torchvision/timm); default: train one")
    p.add_argument("--max-concurrent", type=int, default=8, help="phases in flight (default 8)")
    p.add_argument("--gpus", action="store_true", help="one GPU per phase run, encoder and task, declared: an autoscaler adds GPU nodes; "
                   "refused after --gpu-wait s without one (default: CPUs)")
    p.add_argument("--gpu-wait", type=float, default=600.0, help="seconds to wait for a GPU node (default 600)")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster, or a local Ray)")
    p.add_argument("--smoke-test", action="store_true", help="tiny models on a synthetic tree, local Ray")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from rdistill.cli import EXIT_INPUT, one_line
    from rdistill.commands import checks
    from rdistill.data.imagenet import IMAGENET_WNIDS
    from rdistill.phased import PhasedJob, run_job, say

    args = parse(argv)
    start = time.time()
    from rdistill import storage

    out = args.out if storage.is_uri(args.out) else str(Path(args.out).resolve())
    try:
        checks.output_folder(args.out)  # a relative path under `ray job submit`, an unwritable URI: refused here
        if args.smoke_test:  # the tiny models and the tree: beside the run, or in this machine's scratch
            inputs = smoke_inputs(Path(storage.scratch_for(out, "smoke-inputs") if storage.is_uri(out) else
                                       Path(out) / "smoke-inputs"))
            job = PhasedJob(dataset=f"imagefolder:{inputs['root']}", root=None, dit=inputs["dit"], vae=inputs["vae"],
                            out=out, latent_store=args.latent_store, tracking_uri=args.tracking_uri,
                            preset="dit-tiny", image_size=SMOKE_SIZE, phase_size=4, ipcs=(1, 2),
                            finetune=FINETUNE + SMOKE_FINETUNE, sample_steps=2, guidance=4.0, sample_workers=1,
                            max_concurrent=2, encode_actors=1, gpus=args.gpus, gpu_wait=args.gpu_wait, teacher=args.teacher, teacher_epochs=1,
                            student_epochs=1, students=("resnet-18",), seeds=1, eval_image_size=SMOKE_SIZE,
                            eval_workers=1, address=args.address or local_ray())
            wnids = IMAGENET_WNIDS[:SMOKE_WNIDS]
        else:
            for flag in ("root", "dit", "vae"):
                if getattr(args, flag) is None:
                    raise ValueError(f"--{flag} is required (or --smoke-test)")
            job = PhasedJob(dataset="imagenet1k", root=args.root, dit=args.dit, vae=args.vae, out=out,
                            latent_store=args.latent_store, tracking_uri=args.tracking_uri, phase_size=args.phase_size,
                            ipcs=tuple(sorted(args.ipc)), finetune=FINETUNE, teacher=args.teacher,
                            max_concurrent=args.max_concurrent, address=args.address, gpus=args.gpus,
                            gpu_wait=args.gpu_wait, **SAMPLING, **EVALUATION)
            wnids = IMAGENET_WNIDS
        # Bad input, before any work (one line, exit 2):
        for ipc in job.ipcs:
            checks.at_least("--ipc", ipc, 1)
        checks.at_least("--phase-size", job.phase_size, 1)
        checks.imagenet_root(inputs["root"] if args.smoke_test else job.root, wnids)
        checks.dit_checkpoint(job.dit, job.preset)
        checks.vae_folder(job.vae)
        if job.teacher:
            checks.teacher_file(job.teacher, len(wnids))
        if job.latent_store:
            from rdistill import storage

            storage.check_writable(job.latent_store)
        result = run_job(job)
    except (ValueError, FileNotFoundError) as e:
        print(f"imagenet1k: error: {one_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    say(f"wall time {time.time() - start:.0f} s; MLflow {result['tracking_uri']} run {result['parent_run']}")
    print(result["matrix"].as_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
