"""Graph clusterers' training at fine working pixels: time and peak memory at two commits, same graphs.

SCCS and CS²C build one graph per region (9 um by default) with a node per SLIC superpixel (100 working
pixels by default), so the node count grows with the square of the working pixel's inverse: about 700
per vnc section at 16 nm, 2,200 at 9.2 nm, 9,400 at the native 4.6 nm. This script trains ``sccs`` on
vnc's ``stack2`` (the training stack) at each ``--pixel-size`` with the package at the working tree and
at ``--compare`` (a git worktree under ``--work``), each run in its own process under ``/usr/bin/time -v``
(wall time, peak resident memory), with the same seed, so both draw the same regions; it records the
seconds spent drawing the regions (features and superpixels), then building the graphs (affinities)
and training, the nodes per graph, and how far apart the two commits' training losses are (the same
graphs and the same seed: equal up to floating point).

Usage::

    python benchmarks/graph_training.py --work /tmp/orgaseg-graph-training --compare HEAD~1 \\
        -o benchmarks/results/graph-training-vnc [--pixel-size 16 9.2 native] [--graphs 8] [--steps 30]

Writes ``results.json`` (every run, both commits, the environment) and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isotropic import worktree
from scaling import environment, machine, timed_cli, write_results

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VOXEL_SIZE = ("50", "4.6", "4.6")


def timed_train(source: Path, output: Path, pixel_size: str, graphs: int, steps: int, method: str) -> dict:
    """``orgaseg train`` of ``method`` on vnc stack2 with the package at ``source`` (:func:`scaling.timed_cli`)."""
    run = timed_cli(["train", str(SHARED / "vnc/stack2/raw"), "--method", method, "--preset", "tiny", "--steps",
                     str(steps), "--graphs", str(graphs), "--voxel-size", *VOXEL_SIZE, "--pixel-size", pixel_size,
                     "--seed", "0", "-o", str(output), "--overwrite", "--quiet"], source)
    record = json.loads(output.read_text())
    return {**run, "sampling_s": record["sampling_seconds"],
            "training_s": round(record["train_seconds"] - record["sampling_seconds"], 2),
            "nodes_per_graph": round(record["sampling"]["nodes"] / record["sampling"]["graphs"]),
            "losses": record["losses"]}


def to_markdown(record: dict) -> str:
    lines = [(f"`orgaseg train --method {record['method']} --preset tiny --steps {record['steps']} --graphs "
              f"{record['graphs']}` on vnc stack2 (voxel size {' x '.join(VOXEL_SIZE)} nm), one run each."), "",
             ("| pixel size | code | commit | nodes per graph | wall (s) | drawing the regions (s) "
              "| graphs and training (s) | peak RSS (MiB) |"),
             "|---|---|---|---|---|---|---|---|"]
    for pixel_size, runs in record["runs"].items():
        for code, run in runs.items():
            lines.append(f"| {pixel_size} | {code} | {record['commits'][code][:7]} | {run['nodes_per_graph']:,} | "
                         f"{run['wall_s']:.1f} | {run['sampling_s']:.1f} | {run['training_s']:.1f} | "
                         f"{run['peak_rss_mib']:.0f} |")
    lines.append("")
    for pixel_size, runs in record["runs"].items():
        if {"before", "after"} <= runs.keys():
            before, after = runs["before"], runs["after"]
            lines.append(f"- {pixel_size}: after / before: wall {after['wall_s'] / before['wall_s']:.2f}, graphs and training "
                         f"{after['training_s'] / max(before['training_s'], 1e-9):.2f}, peak memory "
                         f"{after['peak_rss_mib'] / before['peak_rss_mib']:.2f}; largest relative difference of the "
                         f"training losses {record['loss_difference'][pixel_size]:.1e}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the worktree and checkpoints")
    parser.add_argument("--compare", required=True, help="the commit to compare with (e.g. the one before a change)")
    parser.add_argument("--pixel-size", nargs="+", default=["16", "9.2", "native"], help="working pixel sizes")
    parser.add_argument("--graphs", type=int, default=8, help="region graphs in the pool")
    parser.add_argument("--steps", type=int, default=30, help="training steps")
    parser.add_argument("--method", default="sccs", choices=["sccs", "cs2c"])
    parser.add_argument("-o", "--output", type=Path, required=True, help="results folder")
    args = parser.parse_args(argv)
    if not (SHARED / "vnc/stack2/raw").exists():
        parser.error(f"{SHARED / 'vnc/stack2/raw'} is missing: this benchmark needs ../shared/data beside the clone")
    args.work.mkdir(parents=True, exist_ok=True)
    with worktree(args.work, args.compare) as (before, before_commit):
        sources = {"before": before, "after": ROOT / "src"}
        record = {"method": args.method, "graphs": args.graphs, "steps": args.steps, "machine": machine(),
                  "environment": environment(),
                  "commits": {"before": before_commit, "after": environment()["git"]["commit"]},
                  "runs": {}, "loss_difference": {}}
        for pixel_size in args.pixel_size:
            runs = record["runs"].setdefault(pixel_size, {})
            for code, source in sources.items():
                runs[code] = timed_train(source, args.work / f"{code}-{pixel_size}.json", pixel_size, args.graphs,
                                         args.steps, args.method)
                print(f"{pixel_size} {code}: {runs[code]['wall_s']} s, {runs[code]['peak_rss_mib']} MiB, "
                      f"{runs[code]['nodes_per_graph']} nodes per graph", flush=True)
            first, second = (np.asarray(runs[code]["losses"]) for code in ("before", "after"))
            record["loss_difference"][pixel_size] = float(np.max(np.abs(first - second)
                                                                 / np.maximum(np.abs(first), 1e-12)))
    write_results(args.output, record, to_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
