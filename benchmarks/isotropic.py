"""Isotropic volumes: time and peak memory of ``orgaseg segment`` at two commits, same volume, same labels.

The filter bank's widest scale (160 nm) needs 65 voxels of context on every side at 10 nm. On an
isotropic volume that context runs along z too, so blocks of a few whole planes each compute a
window a hundred planes deep. This script measures what a change of the blocks (their shape, and
which part of a window the features are computed for) does there: it segments the same isotropic
volume with the package's code at the working tree and at another commit (checked out as a git
worktree under ``--work`` for the runs), alternating, each run in its own process under ``/usr/bin/time -v``
(peak resident memory), and checks that both give the same labels at every voxel.

The volume is the synthetic cell of ``orgaseg.synthetic.make_cell`` (isotropic, 10 nm; no real
isotropic stack is in ``../shared/data``), written as chunked Zarr. Every run is ``orgaseg
segment`` with K = 6, default block shape, serial: the baseline filter bank, or with ``--learned
METHOD`` a learned method whose encoder is first trained on the cell by the working tree's code
(``orgaseg train --preset cpu --steps N --seed 0``: a few steps, enough to time its forward passes,
not to segment well), with ``--features`` and ``--option`` passed to ``segment``.

Usage::

    python benchmarks/isotropic.py --work /tmp/orgaseg-isotropic --compare 87dfe23 \\
        -o benchmarks/results/isotropic-blocks [--shape 128 256 256] [--repeats 1]
    python benchmarks/isotropic.py --work /tmp/orgaseg-isotropic --compare HEAD~1 --shape 64 192 192 \\
        --learned maester --features expand-stride --option planes=xy,xz,yz -o OUT

Writes ``results.json`` (every run, both commits, the environment) and ``results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import environment, machine, timed_segment, write_results

ROOT = Path(__file__).resolve().parents[1]
VOXEL_NM = 10.0


def prepare(work: Path, shape: tuple[int, int, int]) -> Path:
    """The synthetic cell as a Zarr array (reused when it exists)."""
    import zarr

    from orgaseg.synthetic import make_cell

    path = work / f"cell-{'x'.join(map(str, shape))}.zarr"
    if not path.exists():
        raw = np.asarray(make_cell(shape, voxel_size=(VOXEL_NM,) * 3, seed=0).raw)
        array = zarr.create_array(str(path), shape=raw.shape, chunks=(64, 128, 128), dtype=raw.dtype, zarr_format=2)
        array[:] = raw
    return path


@contextlib.contextmanager
def worktree(work: Path, revision: str) -> Iterator[tuple[Path, str]]:
    """The package source of ``revision`` in a git worktree under ``work``, and its full commit hash.

    The worktree is removed when the block ends, however it ends: the repository keeps none of ours.
    """
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", revision], capture_output=True, text=True,
                            check=True).stdout.strip()
    tree = work / f"tree-{commit[:12]}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)  # entries whose folder is gone
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
    try:
        yield tree / "src", commit
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True,
                       check=False)


def train_encoder(work: Path, raw: Path, method: str, steps: int) -> Path:
    """A ``cpu``-preset checkpoint of ``method`` trained ``steps`` steps on the cell (reused when it exists)."""
    checkpoint = work / f"{method}-cpu-{steps}.pt"
    if not checkpoint.exists():
        command = [sys.executable, "-m", "orgaseg.cli", "train", str(raw), "--voxel-size", *(str(VOXEL_NM),) * 3,
                   "--method", method, "--preset", "cpu", "--steps", str(steps), "--seed", "0",
                   "-o", str(checkpoint), "--quiet"]
        subprocess.run(command, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), check=True)
    return checkpoint


def run_segment(source: Path, raw: Path, output: Path, method: list[str]) -> dict:
    """One ``orgaseg segment`` of the cell with the package at ``source`` (default blocks); ``method``: its options."""
    return timed_segment([str(raw), "-k", "6", "--voxel-size", *(str(VOXEL_NM),) * 3, *method], output, source)


def label_agreement(first: Path, second: Path) -> float:
    """The fraction of voxels with the same label in both outputs."""
    from orgaseg import open_volume

    return float(np.mean(open_volume(first).read() == open_volume(second).read()))


def to_markdown(record: dict) -> str:
    shape = " x ".join(map(str, record["shape"]))
    method = " ".join(record["method"]) or "baseline"
    lines = [(f"Synthetic isotropic cell {shape} voxels at {VOXEL_NM:g} nm ({int(np.prod(record['shape'])):,} "
              f"voxels), {method}, K = 6, serial; fastest of {record['repeats']} run(s) each."), "",
             ("| code | commit | blocks | block shape | wall (s) | sampling (s) | labelling (s) | peak RSS (MiB) "
              "| estimated forward passes |"),
             "|---|---|---|---|---|---|---|---|---|"]
    best = {}
    for run in record["runs"]:
        if run["code"] not in best or run["wall_s"] < best[run["code"]]["wall_s"]:
            best[run["code"]] = run
    for code, run in best.items():
        lines.append(f"| {code} | {record['commits'][code][:7]} | {run['blocks']['blocks']} | "
                     f"{' x '.join(map(str, run['blocks']['shape']))} | {run['wall_s']:.1f} | "
                     f"{run['timings']['sampling_s']:.1f} | {run['timings']['labelling_s']:.1f} | "
                     f"{run['peak_rss_mib']:.0f} | {_passes(run)} |")
    if {"before", "after"} <= best.keys():
        wall = best["after"]["wall_s"] / best["before"]["wall_s"]
        memory = best["after"]["peak_rss_mib"] / best["before"]["peak_rss_mib"]
        lines += ["", (f"after / before: wall {wall:.2f}, peak memory {memory:.2f}; the same label at "
                       f"{record['label_agreement']:.2%} of the voxels.")]
    return "\n".join(lines) + "\n"


def _passes(run: dict) -> str:
    estimate = run.get("cost_estimate")
    return f"{estimate['forward_passes']:,}" if estimate else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the volume, the worktree and outputs")
    parser.add_argument("--compare", required=True, help="the commit to compare with (e.g. the one before a change)")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256], metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--learned", metavar="METHOD", help="a learned method (its cpu preset) instead of the baseline")
    parser.add_argument("--train-steps", type=int, default=20, help="training steps of --learned's encoder")
    parser.add_argument("--features", help="segment's --features")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="segment's --option")
    parser.add_argument("-o", "--output", type=Path, required=True, help="results folder")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    args.work.mkdir(parents=True, exist_ok=True)
    raw = prepare(args.work, tuple(args.shape))
    method = []
    if args.learned:
        method = ["--method", args.learned, "--model", str(train_encoder(args.work, raw, args.learned, args.train_steps))]
    method += ["--features", args.features] if args.features else []
    method += [part for option in args.option for part in ("--option", option)]
    with worktree(args.work, args.compare) as (before, before_commit):
        sources = {"before": before, "after": ROOT / "src"}
        record = {"shape": args.shape, "repeats": args.repeats, "method": method, "machine": machine(),
                  "environment": environment(),
                  "commits": {"before": before_commit, "after": environment()["git"]["commit"]}, "runs": []}
        for repeat in range(args.repeats):
            for code, source in sources.items():
                run = run_segment(source, raw, args.work / f"labels-{code}.ome.zarr", method)
                run.update(code=code, repeat=repeat)
                record["runs"].append(run)
                print(f"{code} repeat {repeat}: {run['wall_s']} s, {run['peak_rss_mib']} MiB, {run['blocks']}, "
                      f"{run['timings']}", flush=True)
    record["label_agreement"] = label_agreement(args.work / "labels-before.ome.zarr", args.work / "labels-after.ome.zarr")
    write_results(args.output, record, to_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
