"""Dice against training time: score every snapshot of several checkpoints, one plot.

``orgaseg train ... --snapshots N`` keeps ``NAME.step-S.pt`` beside ``NAME.pt``.
This script runs the benchmark protocol (``orgaseg.run_benchmark``)
on each snapshot of each given checkpoint and plots merge-mode Dice
(mitochondria, or the class given, and the mean) against training seconds.

Usage:
    python benchmarks/training_curve.py runs/maester-vnc-cpu-6min.pt runs/his4mae-vnc-cpu-6min.pt ... \
        --dataset vnc -o benchmarks/results/his4mae-curve-vnc [-k 6] [--stride 80] [--class mitochondria] [--slices N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

import orgaseg
from orgaseg.environment import environment_record
from orgaseg.models.encoder import load_encoder


def checkpoint_record(path: Path) -> dict:
    """A checkpoint's record (method, step, total_steps, train_seconds, ...), without its weights."""
    return load_encoder(path, "cpu").record


def snapshots(checkpoint: Path) -> list[Path]:
    """The snapshots of ``checkpoint`` in step order (the final checkpoint is the last snapshot)."""
    found = sorted(checkpoint.parent.glob(f"{checkpoint.stem}.step-*{checkpoint.suffix}"))
    if not found:
        raise SystemExit(f"no snapshots of {checkpoint}: train it with --snapshots N")
    return found


def first_slices(data, n: int):
    """The dataset with each evaluation volume cut to its first ``n`` z slices (read into memory)."""
    items = []
    for item in data.evaluation:
        region = (slice(0, min(n, item.raw.shape[0])), slice(None), slice(None))
        raw = orgaseg.Volume(item.raw.read(region), voxel_size=item.raw.voxel_size, path=f"{item.raw.path}[:{n}]")
        reference = orgaseg.Volume(item.reference.read(region), voxel_size=item.raw.voxel_size)
        items.append(dataclasses.replace(item, name=f"{item.name}[:{n}]", raw=raw, reference=reference))
    return dataclasses.replace(data, evaluation=items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("-k", default="6", help="K values (Dice is averaged over them)")
    parser.add_argument("--stride", type=int, default=80, help="expand-stride stride for every model")
    parser.add_argument("--sample-size", type=int, default=100_000)
    parser.add_argument("--class", dest="organelle", default="mitochondria")
    parser.add_argument("--slices", type=int, help="score only the first N z slices of each evaluation volume")
    args = parser.parse_args()
    data = orgaseg.load_dataset(args.dataset)
    if args.slices:
        data = first_slices(data, args.slices)

    args.output.mkdir(parents=True, exist_ok=True)
    curves = {}
    for checkpoint in args.checkpoints:
        points = []
        for snapshot in snapshots(checkpoint):
            record = checkpoint_record(snapshot)
            folder = args.output / "runs" / snapshot.stem
            result = orgaseg.run_benchmark(data, record["method"], folder, ks=args.k, sample_size=args.sample_size,
                                           model=snapshot, features="expand-stride", options={"stride": args.stride},
                                           device="cpu")
            scores = [result["results"][str(k)]["merge"] for k in result["ks"]]
            organelle = [s["per_class"][args.organelle]["dice"] for s in scores if s["per_class"][args.organelle]]
            points.append({
                "snapshot": str(snapshot), "step": record["step"], "total_steps": record["total_steps"],
                "train_seconds": record["train_seconds"], "fraction": record["step"] / record["total_steps"],
                args.organelle: float(np.mean(organelle)) if organelle else None,
                "mean_dice": float(np.mean([s["mean_dice"] for s in scores])),
            })
            print(json.dumps({"method": record["method"], **points[-1]}), flush=True)
        curves[checkpoint_record(checkpoint)["method"]] = points
    (args.output / "curve.json").write_text(json.dumps({"dataset": args.dataset, "slices": args.slices, "k": args.k,
                                                        "stride": args.stride,
                                                        "class": args.organelle, "curves": curves,
                                                        "environment": environment_record()}, indent=2))
    plot(curves, args.organelle, args.output / "curve.png", title=f"{args.dataset}{f' (first {args.slices} slices)' if args.slices else ''}, expand-stride S = {args.stride}, "
                                                                  f"K = {args.k}, merge mode")


def plot(curves: dict, organelle: str, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")  # drawn by Agg on save, no pyplot
    axes = figure.subplots(1, 2)
    for method, points in curves.items():
        fraction = [100 * p["fraction"] for p in points]
        axes[0].plot(fraction, [p[organelle] for p in points], marker="o", label=method)
        axes[1].plot(fraction, [p["mean_dice"] for p in points], marker="o", label=method)
    for ax, what in zip(axes, (f"{organelle} Dice", "mean Dice")):
        ax.set_xlabel("training budget spent (%)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)


if __name__ == "__main__":
    main()
