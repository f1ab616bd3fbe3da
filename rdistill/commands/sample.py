"""`rdistill sample`, `rdistill select` and `rdistill export`: surrogate sets, generated or selected, and back out."""

from __future__ import annotations

from rdistill.commands import checks
from rdistill.commands.ray_args import add_ray_args, task_request

# rdistill.generate.sampler's defaults (SPEC.md section 3, and its batch size), repeated here to keep torch out
# of `--help`; tests/test_errors.py checks that they agree.
DEFAULT_STEPS, DEFAULT_GUIDANCE, DIT_GUIDED_CHANNELS, DEFAULT_BATCH_SIZE = 50, 4.0, 3, 25


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate a surrogate set (IPC images per class) from a trained run",
                       description="Sample IPC images per class from a run's EMA model into Parquet shards; "
                                   "a rerun into the same folder resumes (complete shards are kept).")
    p.add_argument("--run", required=True, metavar="RUN", help="the training run folder (holds checkpoints/)")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="the surrogate-set folder")
    p.add_argument("--workers", type=int, default=0, help="Ray tasks in flight; 0 (default) runs in this process")
    add_ray_args(p)
    p.add_argument("--classes", nargs="+", default=None, help="class names or indices (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of every image's noise (default 0)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"sampling steps (paper: {DEFAULT_STEPS})")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help=f"CFG scale (paper: {DEFAULT_GUIDANCE})")
    p.add_argument("--guidance-channels", default=str(DIT_GUIDED_CHANNELS), choices=["1", "2", "3", "4", "all"],
                   help=f"latent channels guided (DiT: the first {DIT_GUIDED_CHANNELS}; 'all')")
    p.add_argument("--method", default="ddpm", choices=["ddpm", "ddim"], help="sampler (paper: ddpm)")
    p.add_argument("--chunk-size", type=int, default=50, help="images per shard and per task (default 50)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per forward pass, never padded (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="the DiT's forward (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT (for a GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that holds another set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_sample)

    p = sub.add_parser("select", help="a coreset baseline: IPC real images per class (random, herding, k-center)",
                       description="Select IPC training images per class and write them as a surrogate set.")
    p.add_argument("--dataset", required=True, help="digits, fashion-mnist, imagefolder:PATH, imagewoof, ...")
    p.add_argument("--root", default=None, help="the dataset's folder (ImageNet root, Fashion-MNIST IDX folder)")
    p.add_argument("--image-size", type=int, default=None, help="image side (default: the dataset's native size)")
    p.add_argument("--method", required=True, choices=["random", "herding", "kcenter"], help="selection rule")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="the surrogate-set folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the random selection (default 0)")
    p.add_argument("--features", default="convnet", choices=["convnet", "pixels"],
                   help="herding / k-center space: a fixed random ConvNet (default) or raw pixels")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that holds another set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_select)

    p = sub.add_parser("export", help="write a surrogate set as an ImageFolder tree (<class>/<index>.png)")
    p.add_argument("--surrogate", required=True, help="the surrogate-set folder")
    p.add_argument("--out", required=True, help="the ImageFolder root to write: a folder or a storage URI (s3://...)")
    p.add_argument("--overwrite", action="store_true", help="replace the images of another export in --out")
    p.set_defaults(handler=run_export)


def run_sample(args) -> None:
    checks.device(args.device)
    checks.run_folder(args.run)
    checks.output_folder(args.out)
    from rdistill.generate.sampling import SampleJob, run_sampling

    options = task_request(args)
    if args.workers > 0:
        from rdistill.distributed.cluster import connect

        connect(args.address)
    job = SampleJob(
        run_dir=args.run, out=args.out, ipc=args.ipc, seed=args.seed, steps=args.steps, guidance=args.guidance,
        guidance_channels=None if args.guidance_channels == "all" else int(args.guidance_channels),
        method=args.method, chunk_size=args.chunk_size, batch_size=args.batch_size,
        classes=tuple(args.classes) if args.classes else None, overwrite=args.overwrite, workers=args.workers,
        device=args.device, precision=args.precision, compile=args.compile,
    )
    m = run_sampling(job, progress=not args.no_progress, options=options)
    print(f"{args.out}: {sum(m.counts.values())} images of {len(m.counts)} classes ({m.method}, source {m.source})")


def run_select(args) -> None:
    checks.at_least("--ipc", args.ipc, 1)
    checks.output_folder(args.out)
    size = checks.dataset_image_size(args.dataset, args.image_size, args.root)
    from rdistill.data import load_dataset
    from rdistill.generate.select import select_coreset

    dataset = load_dataset(args.dataset, image_size=size, root=args.root)
    m = select_coreset(dataset, args.method, args.ipc, args.seed, args.out, overwrite=args.overwrite,
                       features=args.features, progress=not args.no_progress)
    print(f"{args.out}: {sum(m.counts.values())} images of {len(m.counts)} classes ({m.method}, {m.source})")


def run_export(args) -> None:
    checks.surrogate_sets([args.surrogate])
    checks.output_folder(args.out)
    from rdistill.data.export import export_imagefolder

    n = export_imagefolder(args.surrogate, args.out, overwrite=args.overwrite)
    print(f"wrote {n} images under {args.out}")
