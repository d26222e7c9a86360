"""Instances and morphometrics of the vnc mitochondria reference, blockwise, timed.

The reference mask (``vnc/stack1/mitochondria``, 20 x 1024 x 1024 PNGs, 1-bit or 0/255
thresholded at > 127) becomes a named label volume (0 unassigned, 1 mitochondria) at the published
voxel size (z 50, y = x 4.6 nm). Then, for each block shape:

- ``make_instances`` numbers the mitochondria (6-connected components, ids merged
  across block faces) and writes them as OME-Zarr; the ids are compared with
  ``scipy.ndimage.label`` of the whole mask (they must be equal, not only the count);
- the same with clean-up (components under ``--min-size-nm3`` removed, holes filled);
- ``measure_instances`` measures every instance (with the raw stack for intensities).

Before that, the accuracy of the measured volume and surface area on voxelised ellipsoids
(analytic volume; Knud Thomsen's approximation of the surface, within about 1%) at the
voxel sizes of the tests and of vnc, and on flat boxes of whole voxels (exact) at vnc's.

Timings are wall seconds of each call on this machine, serial executor; voxels/s are
the volume's voxels over that time. Outputs go to a temporary folder; the record goes
to ``OUT/results.json``.

Usage:
    python benchmarks/measure_vnc.py [--data-root ../shared/data] [-o benchmarks/results/measure-vnc]
        [--min-size-nm3 1e6] [--block-shapes 4 1024 1024 5 256 256]
    python benchmarks/measure_vnc.py --ellipsoids-only -o benchmarks/results/measure-accuracy
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from orgaseg.environment import environment_record
from orgaseg.io import open_volume, write_labels
from orgaseg.organelles import make_instances, measure_instances, write_table

VOXEL_SIZE = (50.0, 4.6, 4.6)


def read_mask(folder: Path) -> np.ndarray:
    """The PNG masks as one boolean stack: some slices are stored 1-bit, some 8-bit (0/255, anti-aliased)."""
    slices = []
    for path in sorted(folder.glob("*.png")):
        image = np.asarray(Image.open(path))
        slices.append(image if image.dtype == bool else image > 127)
    return np.stack(slices)


#: (voxel size nm, semi-axes nm): ellipsoids 10+ voxels across, small ones, and at vnc's anisotropy objects
#: spanning from about 2 to 24 sections (a mitochondrion cut by serial sections spans a few).
ELLIPSOIDS = [((4.0, 4.0, 4.0), (120.0, 80.0, 60.0)), ((8.0, 4.0, 4.0), (200.0, 120.0, 90.0)),
              ((8.0, 4.0, 4.0), (400.0, 100.0, 100.0)), ((4.0, 4.0, 4.0), (60.0, 40.0, 30.0)),
              ((4.0, 4.0, 4.0), (20.0, 20.0, 20.0)), ((4.0, 4.0, 4.0), (12.0, 12.0, 12.0)),
              ((50.0, 4.6, 4.6), (600.0, 300.0, 250.0)), ((50.0, 4.6, 4.6), (500.0, 500.0, 500.0)),
              ((50.0, 4.6, 4.6), (250.0, 250.0, 250.0)), ((50.0, 4.6, 4.6), (125.0, 300.0, 300.0)),
              ((50.0, 4.6, 4.6), (75.0, 300.0, 300.0)), ((50.0, 4.6, 4.6), (60.0, 150.0, 150.0))]


#: (voxel size nm, sections, in-plane side nm): flat boxes at vnc's anisotropy (exact volume and area).
BOXES = [((50.0, 4.6, 4.6), 1, 184.0), ((50.0, 4.6, 4.6), 3, 184.0), ((50.0, 4.6, 4.6), 10, 184.0),
         ((50.0, 4.6, 4.6), 1, 920.0)]


def box_accuracy() -> list[dict]:
    """Relative errors of volume and surface area of one box of whole voxels per entry of :data:`BOXES`."""
    rows = []
    for voxel_size, sections, side_nm in BOXES:
        side = round(side_nm / voxel_size[1])
        labels = np.zeros((sections + 4, side + 6, side + 6), np.uint8)
        labels[2:2 + sections, 3:3 + side, 3:3 + side] = 1
        table = measure_instances(labels, voxel_size=voxel_size).table
        height, width = sections * voxel_size[0], side * voxel_size[1]
        area = (2 * width ** 2 + 4 * width * height) / 1e6
        rows.append({"voxel_size_nm": voxel_size, "sections": sections, "side_nm": round(width, 1),
                     "volume_error": round(float(table["volume_um3"][0] / (width ** 2 * height / 1e9) - 1), 4),
                     "surface_area_error": round(float(table["surface_area_um2"][0] / area - 1), 4),
                     "sphericity": round(float(table["sphericity"][0]), 4)})
        print(json.dumps(rows[-1]))
    return rows


def ellipsoid_accuracy() -> list[dict]:
    """Relative errors of volume and surface area of one voxelised ellipsoid per voxel size."""
    rows = []
    for voxel_size, axes in ELLIPSOIDS:
        shape = tuple(int(2 * a / v) + 6 for a, v in zip(axes, voxel_size))
        centre = [(n // 2 + 0.37) * v for n, v in zip(shape, voxel_size)]  # off the voxel grid
        grid = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel_size)], indexing="ij")
        labels = (sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes)) <= 1).astype(np.uint8)
        table = measure_instances(labels, voxel_size=voxel_size).table
        a, b, c = axes
        p = 1.6075
        area = 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p) / 1e6
        volume = 4 / 3 * np.pi * a * b * c / 1e9
        rows.append({"voxel_size_nm": voxel_size, "semi_axes_nm": axes,
                     "semi_axes_voxels": [round(x / v, 1) for x, v in zip(axes, voxel_size)],
                     "sections": int(np.any(labels, axis=(1, 2)).sum()),
                     "volume_error": round(float(table["volume_um3"][0] / volume - 1), 4),
                     "surface_area_error": round(float(table["surface_area_um2"][0] / area - 1), 4),
                     "sphericity": round(float(table["sphericity"][0]), 4)})
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("-o", "--output", default=str(Path(__file__).parent / "results" / "measure-vnc"))
    parser.add_argument("--min-size-nm3", type=float, default=1e6, help="clean-up: smallest mitochondrion kept")
    parser.add_argument("--block-shapes", type=int, nargs="+", default=[4, 1024, 1024, 5, 256, 256],
                        help="block shapes, three numbers each")
    parser.add_argument("--ellipsoids-only", action="store_true",
                        help="only the accuracy on ellipsoids (no data needed), into OUT/results.json")
    args = parser.parse_args()
    if args.ellipsoids_only:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        record = {"ellipsoids": ellipsoid_accuracy(), "boxes": box_accuracy(), "environment": environment_record()}
        (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out / 'results.json'}")
        return
    shapes = [tuple(args.block_shapes[i:i + 3]) for i in range(0, len(args.block_shapes), 3)]
    stack = Path(args.data_root) / "vnc" / "stack1"
    mask = read_mask(stack / "mitochondria")
    raw = stack / "raw"
    record = {"ellipsoids": ellipsoid_accuracy(), "boxes": box_accuracy(), "data": str(stack / "mitochondria"),
              "shape": mask.shape,
              "voxel_size_nm": VOXEL_SIZE, "voxels": int(mask.size), "mitochondria_voxels": int(mask.sum()),
              "runs": []}
    whole, whole_count = ndi.label(mask)
    record["whole_volume_components"] = int(whole_count)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        named = write_labels(folder / "named.ome.zarr", mask.astype(np.uint8), voxel_size=VOXEL_SIZE,
                             provenance={"source": record["data"]}, label_names=["unassigned", "mitochondria"])
        for block_shape in shapes:
            for cleanup in (False, True):
                options = {"min_size_nm3": args.min_size_nm3, "fill_holes": True} if cleanup else {}
                output = folder / f"instances-{'-'.join(map(str, block_shape))}-{int(cleanup)}.ome.zarr"
                started = time.perf_counter()
                instances = make_instances(named, output, block_shape=block_shape, **options)
                instances_s = time.perf_counter() - started
                ids = open_volume(output).read()
                started = time.perf_counter()
                result = measure_instances(output, raw=raw, block_shape=block_shape)
                measure_s = time.perf_counter() - started
                table = result.table
                run = {
                    "block_shape": block_shape, "cleanup": options or None, "instances": len(instances.classes),
                    "equal_to_whole_volume_label": bool(np.array_equal(ids, whole)) if not cleanup else None,
                    "instances_s": round(instances_s, 2),
                    "instances_voxels_per_s": round(mask.size / instances_s),
                    "passes": instances.provenance["passes"],
                    "measure_s": round(measure_s, 2), "measure_voxels_per_s": round(mask.size / measure_s),
                    "median_volume_um3": float(np.median(table["volume_um3"])),
                    "total_volume_um3": float(table["volume_um3"].sum()),
                    "median_surface_area_um2": float(np.median(table["surface_area_um2"])),
                    "median_sphericity": float(np.nanmedian(table["sphericity"])),
                    "median_major_axis_nm": float(np.median(table["axis_major_length_nm"])),
                    "median_mean_intensity": float(np.median(table["mean_intensity"])),
                    "single_section_instances": int(np.sum(table["bbox_min_z_nm"] == table["bbox_max_z_nm"])),
                }
                record["runs"].append(run)
                print(json.dumps(run))
                if block_shape == shapes[0]:
                    out = Path(args.output)
                    out.mkdir(parents=True, exist_ok=True)
                    write_table(result.summary, out / f"summary-{'cleaned' if cleanup else 'raw'}.csv", overwrite=True)
    record["environment"] = environment_record()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
