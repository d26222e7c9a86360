"""Peak memory and wall time of ``orgaseg segment`` and ``orgaseg name --refine`` on one stack, per setting.

``--refine`` reads the segmentation's features with their superpixel context (five times the channels,
ten with ``--z-context``). This script segments one stack of a dataset with the baseline (``-k``, its
default working pixel), writes ``--clicks`` random clicks per class of the stack's own reference
(seed 0) as a points CSV, then runs ``orgaseg name --refine`` with logistic regression (the default) and
with ``--classifier mlp --z-context``. Each command runs in a process of its own, which reports its
peak resident memory (Linux's VmHWM, else ``getrusage``'s ``ru_maxrss``) and wall time.

Usage: OMP_NUM_THREADS=1 python benchmarks/refine_memory.py --dataset vnc -o benchmarks/results/refine-memory-vnc
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from orgaseg.datasets import load_dataset
from orgaseg.environment import environment_record

from clicks import draw_clicks, write_results
from refine_speed import STACKS, add_stack_arguments

#: Runs ``orgaseg.cli.main`` on its arguments, then writes its exit code and peak memory (KiB) to the last one.
#: The peak is Linux's VmHWM, the high-water mark of this process's own memory: ``ru_maxrss`` starts from
#: the parent's peak when the parent spawns it by vfork (Python's default), so a parent that held 2.6 GB
#: made every command report at least 2.6 GB. Elsewhere ``ru_maxrss``, with that caveat.
MEASURED = ("import json, re, resource, sys\n"
            "from pathlib import Path\n"
            "from orgaseg.cli import main\n"
            "code = main(sys.argv[1:-1])\n"
            "status = Path('/proc/self/status')\n"
            "found = re.search(r'VmHWM:\\s+(\\d+) kB', status.read_text()) if status.is_file() else None\n"
            "peak = int(found.group(1)) if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "open(sys.argv[-1], 'w').write(json.dumps({'rc': code, 'peak_kib': peak}))\n")

#: The refine settings measured, after the segmentation.
REFINES = {"refine (logistic regression)": [],
           "refine --classifier mlp --z-context": ["--classifier", "mlp", "--z-context"]}


def measure(arguments: list[str], folder: Path) -> dict:
    """Run ``orgaseg ARGUMENTS`` in a process of its own: exit code, peak memory in GB, wall time."""
    report = folder / "measured.json"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", MEASURED, *arguments, "--quiet", str(report)], check=True)
    wall = time.perf_counter() - started
    measured = json.loads(report.read_text())
    if measured["rc"] != 0:
        raise SystemExit(f"orgaseg {' '.join(arguments)} exited with {measured['rc']}")
    return {"peak_gb": round(measured["peak_kib"] / 1024**2, 2), "wall_s": round(wall, 1)}


def run(args) -> dict:
    dataset = load_dataset(args.dataset, args.data_root)
    index, relative = STACKS[args.dataset]
    reference = np.asarray(dataset.evaluation[index].reference.read((slice(None),) * 3))
    coords = draw_clicks(reference, len(dataset.classes), args.clicks, seed=0)
    rows = [f"{z},{y},{x},{name}" for name, drawn in zip(dataset.classes, coords) for z, y, x in drawn]
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "clicks.csv").write_text("z,y,x,name\n" + "\n".join(rows) + "\n")
        segmentation = folder / "seg.ome.zarr"
        runs["segment"] = measure(["segment", str(Path(args.data_root) / relative), "--voxel-size",
                                   *map(str, dataset.voxel_size), "-k", str(args.k), "-o", str(segmentation)], folder)
        for i, (name, options) in enumerate(REFINES.items()):
            runs[name] = measure(["name", str(segmentation), "--points", str(folder / "clicks.csv"), "--refine",
                                  *options, "-o", str(folder / f"named{i}.ome.zarr")], folder)
    return {"dataset": args.dataset, "stack": relative, "shape": list(reference.shape),
            "voxel_size_nm": list(dataset.voxel_size), "k": args.k, "clicks_per_class": args.clicks,
            "runs": runs, "environment": environment_record(Path(__file__).resolve().parents[1])}


def to_markdown(record: dict) -> str:
    env = record["environment"]
    lines = [
        f"# Refine memory: {record['dataset']} ({record['stack']}, {' x '.join(map(str, record['shape']))})",
        "",
        (f"Baseline, K = {record['k']}; {record['clicks_per_class']} random clicks per class of the stack's "
         f"reference. Commit {(env.get('git', {}).get('commit') or '?')[:10]}; "
         f"{env.get('machine', {}).get('cpu', 'CPU')}, {env.get('machine', {}).get('cores', '?')} cores."),
        "",
        "| command | peak memory (GB) | wall (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {run['peak_gb']} | {run['wall_s']} |" for name, run in record["runs"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stack_arguments(parser, k=8, clicks=50)
    args = parser.parse_args()
    record = run(args)
    write_results(Path(args.output), record, to_markdown(record))


if __name__ == "__main__":
    main()
