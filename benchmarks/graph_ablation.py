"""A quick ablation of the graph clusterers' options on a few vnc sections (merge-mode Dice per class).

Each argument is ``CLUSTERER[:NAME=VALUE,...]``; every one segments sections ``--slices`` of the vnc
evaluation stack on filter-bank features at ``--pixel-size`` for each ``-k`` and each ``--seeds`` and prints
one line per K and seed.

    python benchmarks/graph_ablation.py kmeans superpixel-kmeans superpixel-kmeans:superpixel_px=25,region_nm=2300
    python benchmarks/graph_ablation.py sccs sccs:hops=3 sccs:hops=0 --pixel-size 18.4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import orgaseg

NEURAL = ("sccs", "cs2c", "cs2c-spa")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="CLUSTERER[:NAME=VALUE,...]")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--slices", type=int, nargs=2, default=(0, 4), metavar=("FIRST", "STOP"))
    parser.add_argument("-k", type=int, nargs="+", default=[8, 10])
    parser.add_argument("--pixel-size", type=float, default=9.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the fit (one line each)")
    args = parser.parse_args(argv)
    data = orgaseg.load_dataset("vnc", data_root=args.data_root)
    item = data.evaluation[0]
    region = (slice(*args.slices), slice(None), slice(None))
    raw, reference = item.raw.read(region), item.reference.read(region)
    for run in args.runs:
        clusterer, _, rest = run.partition(":")
        options = {name: float(value) for name, value in (pair.split("=") for pair in rest.split(",") if pair)}
        if clusterer in NEURAL:
            options.setdefault("preset", "cpu")
        for k, seed in ((k, seed) for k in args.k for seed in args.seeds):
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seg = orgaseg.segment(raw, method="baseline", clusterer=clusterer, k=k, voxel_size=item.raw.voxel_size,
                                      pixel_size=args.pixel_size, options=options or None, seed=seed)
            merge = orgaseg.evaluate(np.asarray(seg.labels), reference, classes=data.classes,
                                     background=data.background, mode="merge").results["merge"]
            print(json.dumps({"clusterer": clusterer, "options": options, "k": k, "seed": seed,
                              "pixel_size": args.pixel_size,
                              "mean_dice": round(merge["mean_dice"], 3),
                              "dice": {c: round(v["dice"], 3) for c, v in merge["per_class"].items()},
                              "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
