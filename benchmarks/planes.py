"""3D consistency: features of the xy plane alone against xy, xz and yz averaged, on isotropic phantoms.

A 2D token encoder labels every slice on its own; averaging its features over the three orthogonal
planes (``--option planes=xy,xz,yz``) gives every voxel context along z too. This script trains a
tiny MAESTER encoder on the phantom's training cell (seed 1) at an isotropic voxel size, segments
evaluation cells (other seeds) with each token strategy, with and without the fusion, over several
k-means seeds, and records per run:

- Dice of the merge mapping (mean over all classes and per class, ``orgaseg.evaluate``);
- slice flicker (``orgaseg.evaluation.consistency.slice_flicker``): the fraction of voxels inside
  the cell whose label differs from both z-neighbours', for the cluster ids and for the classes
  they map to; the reference classes' own flicker is the floor.

Usage: python benchmarks/planes.py [--shape 64 128 128] [--voxel-size 20] [--steps 1500] [--k 8]
           [--eval-seeds 0 2] [--kmeans-seeds 0] [-o benchmarks/results/planes-phantom]
Writes ``results.json`` (with the environment record) and ``results.md`` (the tables) to the output
folder (``--render`` rewrites ``results.md`` from ``results.json`` alone); the tiny checkpoint is kept there as ``model.pt`` (ignored by git) and reused when present.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import orgaseg
from orgaseg.datasets import load_dataset
from orgaseg.environment import environment_record
from orgaseg.evaluation.consistency import slice_flicker

#: The token strategies compared, with the options that keep a CPU run short.
STRATEGIES = {"cover-stride": {"keep": 8}, "expand-stride": {"stride": 20}}
PLANES = ("xy", "xy,xz,yz")


def class_map(labels: np.ndarray, mapping: dict, classes) -> np.ndarray:
    """Cluster ids replaced by the index of the class the merge mapping gives them (-1: none)."""
    lut = np.array([classes.index(mapping[str(c)]) if mapping.get(str(c)) else -1 for c in range(labels.max() + 1)])
    return lut[labels]


def run(item, classes, background, checkpoint, features: str, options: dict, k: int, seed: int) -> dict:
    started = time.perf_counter()
    labels = orgaseg.segment(item.raw, method="maester", model=checkpoint, features=features, options=options, k=k,
                             seed=seed, device="cpu").labels
    seconds = time.perf_counter() - started
    report = orgaseg.evaluate(labels, item.reference, classes=classes, background=background).to_dict()["merge"]
    mask = item.mask.read()
    return {
        "volume": item.name, "features": features, "options": options, "k": k, "seed": seed,
        "mean_dice": report["mean_dice"], "mean_dice_organelles": report["mean_dice_organelles"],
        "dice": {name: scores["dice"] for name, scores in report["per_class"].items()},
        "flicker_clusters": slice_flicker(labels, mask),
        "flicker_classes": slice_flicker(class_map(labels, report["mapping"], list(classes)), mask),
        "seconds": round(seconds, 1),
    }


def render(record: dict) -> str:
    """The runs as markdown: one row per strategy and planes, means (and ranges) over volumes and seeds."""
    classes = list(runs_classes(record))
    rows = ["| features | planes | mean Dice | " + " | ".join(classes) + " | flicker, clusters | flicker, classes | "
            "s per run |", "|---|---|---|" + "---|" * len(classes) + "---|---|---|"]
    runs = record["runs"]

    def cell(values, digits=3):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():.{digits}f} ({values.min():.{digits}f}-{values.max():.{digits}f})"

    for features in STRATEGIES:
        for planes in PLANES:
            group = [r for r in runs if r["features"] == features and r["options"].get("planes", "xy") == planes]
            if not group:
                continue
            rows.append("| " + " | ".join([
                features, planes, cell([r["mean_dice"] for r in group]),
                *(cell([r["dice"][name] for r in group]) for name in classes),
                cell([100 * r["flicker_clusters"] for r in group], 2) + " %",
                cell([100 * r["flicker_classes"] for r in group], 2) + " %",
                f"{np.mean([r['seconds'] for r in group]):.0f}"]) + " |")
    floor = ", ".join(f"{name} {100 * value:.2f} %" for name, value in record["reference_flicker"].items())
    return "\n".join(rows) + f"\n\nReference classes' own flicker (the floor): {floor}.\n"


def runs_classes(record: dict) -> dict:
    """The classes scored in the runs, in their order."""
    return dict.fromkeys(name for r in record["runs"] for name in r["dice"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--voxel-size", type=float, default=20.0, help="isotropic voxel size in nm")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--kmeans-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/planes-phantom"))
    parser.add_argument("--render", action="store_true", help="only rewrite results.md from results.json")
    args = parser.parse_args(argv)
    if args.render:
        record = json.loads((args.output / "results.json").read_text())
        (args.output / "results.md").write_text(render(record))
        print(render(record))
        return
    args.output.mkdir(parents=True, exist_ok=True)
    voxel_size = (args.voxel_size,) * 3
    datasets = [load_dataset("phantom", shape=tuple(args.shape), voxel_size=voxel_size, seed=s) for s in args.eval_seeds]
    classes, background = datasets[0].classes, list(datasets[0].background)

    checkpoint = args.output / "model.pt"
    if not checkpoint.exists():
        started = time.perf_counter()
        # the training cell of seed 0's dataset (seed 1): no evaluation cell is ever trained on
        train = load_dataset("phantom", shape=tuple(args.shape), voxel_size=voxel_size, seed=0).train
        orgaseg.train("maester", train, checkpoint, preset="tiny", steps=args.steps, device="cpu", seed=0)
        print(f"trained {args.steps} steps in {time.perf_counter() - started:.0f} s", flush=True)

    record = {
        "benchmark": "planes", "dataset": "phantom", "shape": args.shape, "voxel_size_nm": list(voxel_size),
        "training": {"method": "maester", "preset": "tiny", "steps": args.steps, "train_seed": 1},
        "k": args.k, "eval_seeds": args.eval_seeds, "kmeans_seeds": args.kmeans_seeds,
        "reference_flicker": {}, "runs": [], "environment": environment_record(),
    }
    for dataset in datasets:
        item = dataset.evaluation[0]
        record["reference_flicker"][item.name] = slice_flicker(item.reference.read(), item.mask.read())
        for features, options in STRATEGIES.items():
            for planes in PLANES:
                for seed in args.kmeans_seeds:
                    opts = {**options, **({"planes": planes} if planes != "xy" else {})}
                    record["runs"].append(run(item, classes, background, checkpoint, features, opts, args.k, seed))
                    print(json.dumps(record["runs"][-1]), flush=True)
                    # after every run, so that an interrupted benchmark keeps what it measured
                    (args.output / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.output / "results.md").write_text(render(record))
    print(render(record))


if __name__ == "__main__":
    main()
