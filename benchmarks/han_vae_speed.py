"""Han et al.'s voxel latents at strides 1, 2, 4: patches encoded, voxels per second and Dice at each.

For one crop of a benchmark dataset's first evaluation volume and one trained
``han-vae`` or ``han-vae-2d`` checkpoint, the crop's features are computed
with ``orgaseg.compute_features`` (read with their halo, at the checkpoint's
working pixel size, as a segmentation block computes them) at each stride,
timed; the patches the encoder receives are counted (the batch sizes entering
its first convolution). Each stride's features are clustered (k-means, K
given, 50,000-voxel sample, seed 0) and scored against the reference (merge
and strict mean Dice), and compared with the stride-1 features (mean absolute
difference over the features' standard deviation).

Usage:
    python benchmarks/han_vae_speed.py CHECKPOINT -o OUT [--dataset vnc] [--crop Z Y X] [--strides 1 2 4] [-k 6]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import orgaseg
from orgaseg.cluster import fit_kmeans
from orgaseg.environment import environment_record
from orgaseg.io.partial import write_atomic
from orgaseg.models.checkpoint import load_checkpoint


class PatchCounter:
    """Counts the patches the encoder receives: batch sizes entering the first convolution of each forward pass."""

    def __init__(self) -> None:
        self.count = 0
        self._handle = None

    def _hook(self, module, inputs) -> None:
        if isinstance(module, (torch.nn.Conv3d, torch.nn.Conv2d)) and module.in_channels == 1:
            self.count += int(inputs[0].shape[0])

    def __enter__(self) -> "PatchCounter":
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", required=True, help="results folder")
    parser.add_argument("--dataset", default="vnc")
    parser.add_argument("--crop", type=int, nargs=3, default=(10, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--strides", type=int, nargs="+", default=(1, 2, 4))
    parser.add_argument("-k", type=int, default=6)
    args = parser.parse_args()

    record = load_checkpoint(args.checkpoint)
    data = orgaseg.load_dataset(args.dataset)
    item = data.evaluation[0]
    crop = tuple(min(c, s) for c, s in zip(args.crop, item.raw.shape))
    region = tuple(slice(0, c) for c in crop)
    reference = item.reference.read(region)
    voxels = int(np.prod(crop))
    rows, first = [], None
    for stride in args.strides:
        with PatchCounter() as counter:
            start = time.perf_counter()
            features = orgaseg.compute_features(item.raw, region, method=record["method"], model=args.checkpoint,
                                                options={"stride": stride}, device="cpu", seed=0)
            seconds = time.perf_counter() - start
        first = features if first is None else first
        flat = features.reshape(-1, features.shape[-1])
        sample = flat[np.random.default_rng(0).choice(len(flat), size=min(50_000, len(flat)), replace=False)]
        labels = fit_kmeans(sample, args.k, seed=0).predict(features)
        report = orgaseg.evaluate(labels, reference, classes=data.classes, background=data.background).to_dict()
        row = {"stride": stride, "seconds": round(seconds, 2), "patches": counter.count,
               "patches_per_s": round(counter.count / seconds, 1), "input_voxels_per_s": round(voxels / seconds, 1),
               "merge_mean_dice": round(report["merge"]["mean_dice"], 3),
               "strict_mean_dice": round(report["strict"]["mean_dice"], 3),
               "merge_dice": {c: (round(v["dice"], 3) if v and v["dice"] is not None else None)
                              for c, v in report["merge"]["per_class"].items()},
               "difference_to_first": round(float(np.abs(features - first).mean() / first.std()), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    environment = environment_record()
    result = {"dataset": args.dataset, "volume": item.name, "crop": list(crop), "k": args.k,
              "checkpoint": str(args.checkpoint), "method": record["method"], "preset": record["preset"],
              "steps": record["step"], "pixel_size_nm": record.get("pixel_size_nm"), "strides": list(args.strides),
              "timing_note": "seconds include compute_features' setup (checkpoint load, normalisation sample) and "
                             "the resampling to the working pixel size and back",
              "environment": environment, "machine": environment["machine"], "orgaseg_version": orgaseg.__version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(result, indent=2))
    write_atomic(out / "results.md", markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        f"# Voxel-latent stride: {result['method']} ({result['preset']} preset, {result['steps']} steps) on "
        f"{result['dataset']} {result['volume']}, crop {' x '.join(map(str, result['crop']))}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch threads {machine.get('torch_threads')}. "
        f"Working pixel size {result['pixel_size_nm']} nm; k-means K = {result['k']}. {result['timing_note']}.",
        "",
        "| stride | patches | patches/s | input voxels/s | merge mean Dice | strict mean Dice | difference to stride "
        f"{result['strides'][0]} |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['stride']} | {row['patches']:,} | {row['patches_per_s']:,.0f} | "
                     f"{row['input_voxels_per_s']:,.0f} | {row['merge_mean_dice']:.3f} | {row['strict_mean_dice']:.3f} | "
                     f"{row['difference_to_first']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
