"""Peak memory of the ImageNet-scale data path at 1x and 10x a synthetic ImageNet-shaped set (issue 10).

Four stages, each in a fresh process (as a Ray worker would run it), on a WNID tree of 4 classes x n
random 32x32 PNGs (n = 80 at 1x, 800 at 10x) and a val/ split of n per class (a test batch of 256 and a
training batch of 64 are full at 1x, so what could grow is the data, not the batch):
- encode: the latent store's chunks (rdistill.generate.latent_store, in process: the same functions the Ray
  Data pipeline runs per chunk) with a tiny random SD-format VAE, chunks of 32 images;
- read: StoredLatents over the 4 classes, 200 training batches of 8 (memory-mapped chunks);
- evaluate (streamed): a surrogate set of IPC n / 4 (shards packed to scratch) and the val split read per
  batch; ConvNet-3, the idc protocol, 1 epoch (rdistill.evaluate.streams);
- evaluate (tensors): the same cell the way small datasets run it (whole splits as float tensors), for contrast.
Peak = VmHWM after resetting it (`5 > /proc/self/clear_refs`) once imports, model and codec are loaded;
growth = peak - RSS at that point. RssAnon (anonymous memory, not the page cache behind memory maps) is
reported at the end of each stage.

    python benchmarks/data_path_memory.py               # ~2 minutes here
    python benchmarks/data_path_memory.py --smoke-test  # 1x and 2x of a smaller set, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, reset_peak, status_kib, write_report  # noqa: E402

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
SIZE, CHUNK = 32, 32




def child(stage: str, tmp: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from rdistill.data import load_dataset
    from rdistill.generate import latent_store as ls
    from rdistill.models.codec import load_codec

    tmp = Path(tmp)
    d = load_dataset(f"imagefolder:{tmp / 'in'}", image_size=SIZE)
    t0 = time.perf_counter()
    if stage == "encode":
        codec = load_codec(f"vae:{tmp / 'vae'}", 3)
        before = reset_peak()
        ls.encode_in_process(str(tmp / "store"), ls.plan_chunks(d.train, d.classes, chunk=CHUNK), codec, SIZE, True)
    elif stage == "read":
        before = reset_peak()
        lat = ls.StoredLatents(str(tmp / "store"), d.classes, [len(d.train.indices_of(k)) for k in range(4)], True)
        g = torch.Generator().manual_seed(0)
        for step in range(200):
            lat.batch(torch.randint(0, len(lat), (8,), generator=g), g)
    else:
        from rdistill.evaluate.cells import Cell, DataSpec, real_test_tensors, train_tensors
        from rdistill.evaluate.protocols import get_protocol
        from rdistill.evaluate.training import train_and_test

        data = DataSpec(f"imagefolder:{tmp / 'in'}", image_size=SIZE)
        ipc = len(d.test) // 16  # n / 4 per class: a batch of 64 is full at 1x
        protocol = replace(get_protocol("idc", 1), image_size=None)  # at the set's 64 px
        before = reset_peak()
        if stage == "evaluate_streamed":
            from rdistill.evaluate import cells

            cell = Cell("dit", ipc, "convnet-3", 0, str(tmp / "set"))
            cells.run_cell_streamed(cell, data, protocol, teacher=None, device="cpu",
                                    keep_model=False, workers=0)
        else:
            x, y = train_tensors(data, str(tmp / "set"), ipc)
            tx, ty = real_test_tensors(data)
            train_and_test("convnet-3", protocol, x, y, tx, ty, num_classes=4, seed=0)
    return {"stage": stage, "seconds": round(time.perf_counter() - t0, 1), "rss_before_mib": round(before / 1024),
            "peak_rss_mib": round(status_kib("VmHWM") / 1024), "growth_mib": round((status_kib("VmHWM") - before) / 1024),
            "rss_anon_end_mib": round(status_kib("RssAnon") / 1024)}


def build(tmp: Path, per_class: int) -> None:
    """The synthetic tree, a tiny VAE, and a surrogate set of IPC per_class / 4 (real images as the set)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from rdistill.data import load_dataset
    from rdistill.data.shards import Manifest, shard_name, shard_row, write_shard
    from tests.tiny_models import save_tiny_vae, write_wnid_folder

    write_wnid_folder(tmp / "in", WNIDS, per_class=per_class, val_per_class=per_class, size=SIZE)
    save_tiny_vae(tmp / "vae")
    d = load_dataset(f"imagefolder:{tmp / 'in'}", image_size=SIZE)
    ipc = per_class // 4
    m = Manifest(list(d.classes), list(d.model_labels), ipc, "dit", "bench")
    for k, c in enumerate(d.classes):
        idx = d.train.indices_of(k)[:ipc]
        rows = [shard_row(d.train.images([int(i)])[0], k, c, seed=0, index=j, source="bench") for j, i in enumerate(idx)]
        m.record(write_shard(tmp / "set", rows, shard_name(k, 0), classes=d.classes), k, 0)
    m.save(tmp / "set")


def measure(stage: str, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, str(tmp)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RDISTILL_SCRATCH": str(tmp / "scratch")}
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="8 and 16 images per class, write nothing")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_path_memory.json")
    args = ap.parse_args()
    scales = {"1x": 8, "2x": 16} if args.smoke_test else {"1x": 80, "10x": 800}
    rows = []
    for scale, per_class in scales.items():
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-data-path-{scale}-"))
        try:
            build(tmp, per_class)
            for stage in ("encode", "read", "evaluate_streamed", "evaluate_tensors"):
                row = {"scale": scale, "train_images": 4 * per_class, "val_images": 4 * per_class, "surrogate_images": per_class, **measure(stage, tmp)}
                print(row)
                rows.append(row)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {"settings": {"tree": f"4 WNID classes x n random {SIZE}x{SIZE} PNGs, n = {list(scales.values())}",
                           "codec": "tiny random AutoencoderKL (tests/tiny_models.py), 4x16x16 latents",
                           "chunk": CHUNK, "read": "200 batches of 8", "evaluate": "convnet-3, idc, 1 epoch, IPC n/4"},
              "rows": rows, "machine": machine()}
    write_report(report, args.out, args.smoke_test)


if __name__ == "__main__":
    main()
