"""`rdistill teacher`: train the `rded` protocol's ResNet-18 teacher on a dataset's real training split."""

from __future__ import annotations

from rdistill.commands import checks


def register(sub) -> None:
    p = sub.add_parser("teacher", help="train a ResNet-18 teacher for the rded protocol on the real train split",
                       description="Train ResNet-18 (torchvision's reference recipe: SGD, lr 0.1 per 256 images, "
                                   "x0.1 every third of the epochs) on the real train split, read in batches; "
                                   "write its state_dict (what `rdistill evaluate --teacher` takes) and a JSON "
                                   "record with its test accuracy.")
    p.add_argument("--dataset", required=True, help="imagenet1k, imagewoof, imagefolder:PATH, ...")
    p.add_argument("--root", default=None, help="the dataset's folder (an ImageNet root with train/ and val/)")
    p.add_argument("--out", required=True, help="state_dict file to write (a path or a storage URI)")
    p.add_argument("--epochs", type=int, default=90, help="training epochs (default 90, torchvision's)")
    p.add_argument("--batch-size", type=int, default=256, help="batch (default 256; the lr scales with it)")
    p.add_argument("--image-size", type=int, default=224, help="training and test side (default 224)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers decoding images (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=run_teacher)


def run_teacher(args) -> None:
    checks.device(args.device)
    for flag in ("epochs", "batch_size", "image_size"):
        checks.at_least(f"--{flag.replace('_', '-')}", getattr(args, flag), 1)
    checks.at_least("--workers", args.workers, 0)
    checks.dataset_image_size(args.dataset, args.image_size, args.root)
    from rdistill import storage
    from rdistill.common.devices import resolve_device
    from rdistill.evaluate.teacher import parent_of, train_teacher

    storage.check_writable(parent_of(args.out))
    r = train_teacher(args.dataset, args.root, args.out, image_size=args.image_size, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, device=resolve_device(args.device),
                      workers=args.workers)
    print(f"teacher: {args.out}  test accuracy {r['final_acc']:.2f}% after {r['epochs']} epochs ({r['seconds']} s)")
