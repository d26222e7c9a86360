"""Workers: the serial executor against 2 threads and a dask LocalCluster of 1 and 2 workers, same output required.

Segments the 4x tiled vnc volume of ``benchmarks/scaling.py`` (8.4 M voxels,
four 8 x 512 x 512 blocks) with the baseline, K = 6, once per executor, each
in its own process; asserts that the label volumes are identical voxel
for voxel and reports the wall time, the time of the two block passes
(sampling + labelling, where the workers matter) and the speed-ups.

Usage::

    python benchmarks/workers.py --work /tmp/orgaseg-scaling -o benchmarks/results/workers-vnc
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from scaling import ROOT, environment, machine, prepare, run_segment

EXECUTORS = {
    "serial": (),
    "threads, 2 workers": ("--executor", "threads", "--workers", "2"),
    "dask, 1 worker": ("--executor", "dask", "--workers", "1"),
    "dask, 2 workers": ("--executor", "dask", "--workers", "2"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the tiled volume and outputs")
    parser.add_argument("-o", "--output", type=Path, required=True, help="results folder")
    parser.add_argument("--size", type=int, default=4, help="which tiled volume (default 4x)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from orgaseg import open_volume

    raw = prepare(args.work, (1, 2, 4, 8))[args.size]
    record = {"machine": machine(), "environment": environment(), "volume": str(raw), "runs": {}}
    labels = {}
    for name, options in EXECUTORS.items():
        output = args.work / f"workers-{name.replace(', ', '-').replace(' ', '')}.ome.zarr"
        record["runs"][name] = run_segment(raw, output, *options)
        labels[name] = open_volume(output).read()
        print(name, record["runs"][name]["wall_s"], record["runs"][name]["timings"], flush=True)
    reference = labels["serial"]
    for name, array in labels.items():
        assert np.array_equal(array, reference), f"{name} differs from the serial executor"
    record["identical"] = True
    record["machine"]["load_average_at_end"] = list(os.getloadavg())
    serial = record["runs"]["serial"]
    lines = ["| executor | wall (s) | speed-up | sampling + labelling (s) | speed-up of the block passes | peak RSS of the main process (MiB) |",
             "|---|---|---|---|---|---|"]
    for name, run in record["runs"].items():
        blockwise = run["timings"]["sampling_s"] + run["timings"]["labelling_s"]
        serial_blockwise = serial["timings"]["sampling_s"] + serial["timings"]["labelling_s"]
        run["speedup_wall"] = round(serial["wall_s"] / run["wall_s"], 2)
        run["speedup_blockwise"] = round(serial_blockwise / blockwise, 2)
        lines.append(f"| {name} | {run['wall_s']:.1f} | {run['speedup_wall']:.2f} | {blockwise:.1f} | "
                     f"{run['speedup_blockwise']:.2f} | {run['peak_rss_mib']:.0f} |")
    lines.append("")
    lines.append("The label volumes of all executors are identical voxel for voxel (asserted).")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
