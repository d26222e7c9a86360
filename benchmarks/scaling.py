"""Scaling: segment 1x to 32x volumes; wall time should grow linearly, peak memory stay bounded.

Peak memory grows while the features a run keeps between its passes fit their
budget (``FEATURE_CACHE_BYTES``, reached between 16x and 32x), then stays flat.

The volumes are tiles of the real vnc data (ssTEM, 50 x 4.6 x 4.6 nm): eight
distinct 8 x 512 x 512 crops (four quadrants of slices 0-7 of stack1 and of
stack2), stacked along z, the Nx volume holding the first N of them (cycling
through the eight beyond 8x), written as chunked Zarr. Every run is ``orgaseg segment`` with the baseline filter
bank (no trained model needed), K = 6 and the same block shape, in its own
process under ``/usr/bin/time -v``, which reports its peak resident memory.

Usage::

    python benchmarks/scaling.py --work /tmp/orgaseg-scaling -o benchmarks/results/scaling-vnc [--repeats 2]

Writes ``results.json`` (every run) and ``results.md`` (the table in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ORGASEG_DATA_ROOT", ROOT.parent / "shared" / "data")) / "vnc"
VOXEL_SIZE = ("50", "4.6", "4.6")
TILE = (8, 512, 512)
BLOCK = ("8", "512", "512")
SIZES = (1, 2, 4, 8, 16, 32)


def tiles() -> list[np.ndarray]:
    """Eight distinct 8 x 512 x 512 crops of the vnc stacks."""
    from orgaseg import open_volume

    crops = []
    for stack in ("stack1", "stack2"):
        volume = open_volume(DATA / stack / "raw", voxel_size=tuple(map(float, VOXEL_SIZE)))
        for y in (0, 512):
            for x in (0, 512):
                crops.append(volume.read((slice(0, TILE[0]), slice(y, y + TILE[1]), slice(x, x + TILE[2]))))
    return crops


def prepare(work: Path, sizes=SIZES) -> dict[int, Path]:
    """Write the Nx volumes as Zarr arrays (chunks of one tile's 8 slices); reuse existing ones."""
    import zarr

    paths = {n: work / f"vnc-{n}x.zarr" for n in sizes}
    if all(p.exists() for p in paths.values()):
        return paths
    crops = tiles()
    work.mkdir(parents=True, exist_ok=True)
    for n, path in paths.items():
        data = np.concatenate([crops[i % len(crops)] for i in range(n)], axis=0)
        array = zarr.create_array(str(path), shape=data.shape, chunks=TILE, dtype=data.dtype, zarr_format=2,
                                  overwrite=True)
        array[:] = data
    return paths


def run_segment(raw: Path, output: Path, *extra: str) -> dict:
    """One ``orgaseg segment`` of a tiled volume in its own process; wall time, peak RSS and the provenance record."""
    return timed_segment([str(raw), "-k", "6", "--voxel-size", *VOXEL_SIZE, "--block-shape", *BLOCK, *extra],
                         output)


def timed_segment(arguments: list[str], output: Path, source: Path = ROOT / "src") -> dict:
    """``orgaseg segment ARGUMENTS -o OUTPUT`` with the package at ``source`` (:func:`timed_cli`): wall time,
    peak resident memory, and what the provenance says of blocks and timings."""
    command = ["segment", *arguments, "-o", str(output), "--overwrite", "--quiet"]
    run = timed_cli(command, source)
    record = json.loads(Path(f"{output}.provenance.json").read_text())
    return {**run, "timings": record["timings"], "blocks": record["blocks"], "executor": record["executor"],
            "voxels": int(np.prod(record["input"]["shape"])), "cost_estimate": record.get("cost_estimate")}


def timed_cli(command: list[str], source: Path = ROOT / "src") -> dict:
    """``orgaseg COMMAND...`` with the package at ``source``, in its own process under ``/usr/bin/time -v``:
    ``wall_s``, ``peak_rss_mib`` and the ``command`` line. A failed run raises with its last output."""
    line = [sys.executable, "-m", "orgaseg.cli", *command]
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *line], env=dict(os.environ, PYTHONPATH=str(source)),
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(line)} failed:\n{done.stderr[-3000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(rss_kib / 1024, 1), "command": " ".join(line)}


def write_results(output: Path, record: dict, markdown: str) -> None:
    """``results.json`` (with the load average at the end) and ``results.md`` into ``output``; the markdown on stdout."""
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (output / "results.md").write_text(markdown)
    print(markdown)


def environment() -> dict:
    """``orgaseg.environment.environment_record()``: git commit and dirty flag, package versions, machine."""
    from orgaseg.environment import environment_record

    return environment_record()


def machine() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def linear_fit(sizes, seconds) -> tuple[float, float, float]:
    """``t = a + b n`` by least squares, and the largest relative deviation of a run from it."""
    b, a = np.polyfit(sizes, seconds, 1)
    deviation = max(abs(t - (a + b * n)) / (a + b * n) for n, t in zip(sizes, seconds))
    return float(a), float(b), float(deviation)


def summarise(runs: list[dict]) -> dict:
    best = {}
    for run in runs:  # the fastest repeat of each size: the machine is shared, other jobs only slow runs down
        if run["size"] not in best or run["wall_s"] < best[run["size"]]["wall_s"]:
            best[run["size"]] = run
    sizes = sorted(best)
    walls = [best[n]["wall_s"] for n in sizes]
    blockwise = [best[n]["timings"]["sampling_s"] + best[n]["timings"]["labelling_s"] for n in sizes]
    a, b, deviation = linear_fit(sizes, walls)
    per_voxel = [best[n]["voxels"] / s for n, s in zip(sizes, blockwise)]
    rss = [best[n]["peak_rss_mib"] for n in sizes]
    return {
        "sizes": sizes,
        "wall_s": walls,
        "wall_fit": {"fixed_s": round(a, 2), "per_size_unit_s": round(b, 2), "max_deviation": round(deviation, 3)},
        "wall_ratio_to_1x": [round(w / walls[0], 2) for w in walls],
        "blockwise_s": [round(s, 2) for s in blockwise],
        "blockwise_voxels_per_s": [round(v) for v in per_voxel],
        "blockwise_rate_spread": round(max(per_voxel) / min(per_voxel) - 1, 3),
        "peak_rss_mib": rss,
        "peak_rss_ratio_to_1x": [round(r / rss[0], 2) for r in rss],
    }


def to_markdown(summary: dict, runs: list[dict]) -> str:
    best = {n: min((r for r in runs if r["size"] == n), key=lambda r: r["wall_s"]) for n in summary["sizes"]}
    lines = ["| volume | voxels | blocks | wall (s) | wall / 1x | sampling + labelling (s) | voxels/s in blocks | peak RSS (MiB) | RSS / 1x |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, n in enumerate(summary["sizes"]):
        run = best[n]
        lines.append(f"| {n}x | {run['voxels']:,} | {run['blocks']['blocks']} | {run['wall_s']:.1f} | "
                     f"{summary['wall_ratio_to_1x'][i]:.2f} | {summary['blockwise_s'][i]:.1f} | "
                     f"{summary['blockwise_voxels_per_s'][i]:,} | {run['peak_rss_mib']:.0f} | "
                     f"{summary['peak_rss_ratio_to_1x'][i]:.2f} |")
    fit = summary["wall_fit"]
    lines.append("")
    lines.append(f"Wall time fits t = {fit['fixed_s']:.1f} s + {fit['per_size_unit_s']:.1f} s x N (largest deviation "
                 f"of a run from the line: {100 * fit['max_deviation']:.1f} %); the blockwise rate varies by "
                 f"{100 * summary['blockwise_rate_spread']:.1f} % across sizes.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the tiled volumes and outputs")
    parser.add_argument("-o", "--output", type=Path, required=True, help="results folder")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    paths = prepare(args.work, args.sizes)
    record = {"machine": machine(), "environment": environment(), "runs": []}
    for repeat in range(args.repeats):
        for n in args.sizes:
            run = run_segment(paths[n], args.work / f"labels-{n}x.ome.zarr")
            run.update(size=n, repeat=repeat)
            record["runs"].append(run)
            print(f"{n}x repeat {repeat}: {run['wall_s']} s, {run['peak_rss_mib']} MiB, {run['timings']}", flush=True)
    record["summary"] = summarise(record["runs"])
    write_results(args.output, record, to_markdown(record["summary"], record["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
