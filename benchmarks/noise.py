"""Noise robustness (CS²C Fig. 3b): Dice as Gaussian noise is added to the evaluation stack.

Noise of standard deviation 1%..8% of the intensity range (255 for vnc's uint8) is added to
``--slices`` sections of the evaluation stack (seeded; clipped to the range), each method segments the
noisy sections at ``-k`` clusters and is scored in merge mode against the reference. Methods: the
baseline (filter bank + pixel k-means) and the graph clusterers named by ``--clusterer`` on the same
features (default cs2c); each ``--model CKPT`` adds pixel k-means on that checkpoint's method (maester,
his4mae) with expand-stride features at the checkpoint's own pixel size.

    python benchmarks/noise.py -o benchmarks/results/noise-vnc --model maester.pt
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import orgaseg
from orgaseg.environment import environment_record
from orgaseg.models.checkpoint import file_hash, load_checkpoint

LEVELS = (0.0, 0.01, 0.02, 0.04, 0.08)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--dataset", default="vnc")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--slices", type=int, nargs=2, default=(0, 4), metavar=("FIRST", "STOP"))
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("--pixel-size", type=float, default=9.2)
    parser.add_argument("--clusterer", action="append", default=None)
    parser.add_argument("--model", action="append", default=[],
                        help="a trained checkpoint (repeatable): also its method's expand-stride features + k-means")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clusterers = args.clusterer or ["cs2c"]

    data = orgaseg.load_dataset(args.dataset, data_root=args.data_root)
    item = data.evaluation[0]
    region = (slice(*args.slices), slice(None), slice(None))
    clean = item.raw.read(region)
    reference = item.reference.read(region)
    top = float(np.iinfo(clean.dtype).max) if clean.dtype.kind in "ui" else float(clean.max())
    runs = [("baseline", "kmeans", None)] + [("baseline", c, None) for c in clusterers]
    runs += [(load_checkpoint(model)["method"], "kmeans", model) for model in args.model]
    results = []
    for level in LEVELS:
        rng = np.random.default_rng(args.seed)
        noisy = np.clip(clean + rng.normal(scale=level * top, size=clean.shape), 0, top).astype(clean.dtype)
        for method, clusterer, model in runs:
            started = time.perf_counter()
            options = {"preset": "cpu"} if clusterer in ("sccs", "cs2c", "cs2c-spa") else None
            extra = {"model": model, "features": "expand-stride", "options": {"stride": 40}} if model else {}
            # a learned method works at its checkpoint's pixel size (None), the filter bank at --pixel-size
            pixel_size = None if model else args.pixel_size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seg = orgaseg.segment(noisy, method=method, k=args.k, clusterer=clusterer, voxel_size=item.raw.voxel_size,
                                      pixel_size=pixel_size, seed=args.seed, device="cpu",
                                      **({"options": options} if options else {}), **extra)
            report = orgaseg.evaluate(np.asarray(seg.labels), reference, classes=data.classes,
                                      background=data.background, mode="merge")
            merge = report.results["merge"]
            row = {"noise": level, "method": method, "clusterer": clusterer, "model": model,
                   "pixel_size_nm": working_pixel_size(seg.provenance, item.raw.voxel_size),
                   "mean_dice": round(merge["mean_dice"], 4),
                   "dice": {c: round(v["dice"], 4) for c, v in merge["per_class"].items()},
                   "seconds": round(time.perf_counter() - started, 1)}
            results.append(row)
            print(json.dumps(row), flush=True)
    record = {"dataset": data.name, "volume": item.name, "slices": list(args.slices), "k": args.k,
              "pixel_size_nm": args.pixel_size, "levels": list(LEVELS), "seed": args.seed,
              "models": {model: file_hash(model) for model in args.model}, "results": results,
              "environment": environment_record()}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(record, indent=2))
    plot(record, args.output / "noise.png")
    return 0


def working_pixel_size(provenance: dict, voxel_size) -> float:
    """The in-plane pixel size (nm) a segmentation worked at: its working grid's, else the input's."""
    grid = provenance["config"].get("working_grid")
    return float((grid["working_voxel_size"] if grid else voxel_size)[-1])


def plot(record: dict, path: Path) -> None:
    """Mean and mitochondria Dice against the noise level, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharex=True)
    names = sorted({(r["method"], r["clusterer"]) for r in record["results"]})
    for method, clusterer in names:
        rows = [r for r in record["results"] if (r["method"], r["clusterer"]) == (method, clusterer)]
        x = [100 * r["noise"] for r in rows]
        label = f"{method} + {clusterer}" + (f" ({rows[0]['pixel_size_nm']:g} nm)" if rows[0].get("model") else "")
        axes[0].plot(x, [r["mean_dice"] for r in rows], marker="o", label=label)
        axes[1].plot(x, [r["dice"].get("mitochondria", np.nan) for r in rows], marker="o", label=label)
    axes[0].set_ylabel("mean Dice (merge)")
    axes[1].set_ylabel("mitochondria Dice (merge)")
    for ax in axes:
        ax.set_xlabel("Gaussian noise, % of the intensity range")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{record['dataset']} sections {record['slices'][0]}-{record['slices'][1] - 1}, K = {record['k']}, "
                 f"filter bank at {record['pixel_size_nm']:g} nm")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
