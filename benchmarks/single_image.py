"""The README's "Single 2D images" figures: one section of each dataset run through the command line.

Every step is an ``orgaseg`` command, as the README gives it, on a single image written from a
dataset's evaluation split (``orgaseg.datasets``); scores come from ``orgaseg evaluate`` against the
same section's reference labels. The choices, fixed:

- sections: the middle section (z = slices // 2) of each dataset's first evaluation item: vnc stack1
  section 10, cdeep3m-mito training section 10 (``images.030.png``); written as a PNG without
  metadata, so the pixel size is given with ``--voxel-size`` (vnc 4.6 nm, cdeep3m-mito 5.9 nm, an
  assumption of the dataset);
- method: the baseline, K = 8, the command's defaults otherwise (seed 0);
- clicks: drawn at random from the section's reference labels (``clicks.draw_clicks``, seed 0), per
  class of the dataset, written as a ``y,x,name`` CSV.

Steps:

1. vnc, ``segment -k 8`` with the voxel size 4.6 4.6 4.6 (the pixel size as Z), 50 4.6 4.6, and none
   (the 1 nm guess); ``evaluate`` (merge and strict mean Dice) of each;
2. cdeep3m-mito, 8 clicks per class (other, mitochondria): ``name`` and ``name --refine`` of the
   segmentation, ``evaluate --mode names`` (mitochondria Dice, recall, precision; their ratio is the
   named area over the reference's), then ``instances --classes mitochondria --min-size-nm2 20000
   --fill-holes --majority 12`` of each: the mitochondria counted against the reference's, whose
   mask (written as a named label image) gets the same ``instances`` without ``--majority`` and with
   no option at all (every connected component);
3. vnc, 5 clicks per class: ``name`` of the 4.6 nm segmentation of step 1, ``evaluate --mode names``;
4. with ``--montage``: an 8192 x 8192 montage of vnc stack1 sections (8 x 8 tiles of 1024 x 1024,
   sections 0, 1, ..., 19, 0, ... row by row) written as an ImageJ TIFF with its 4.6 nm pixel size;
   ``segment -k 8``, ``name`` (5 clicks per class drawn from the montage of the reference sections,
   seed 0), ``instances --classes mitochondria --min-size-nm2 20000 --fill-holes`` and ``measure
   --raw``, each timed with its peak memory.

Each command runs in a process of its own (``refine_memory.measure``: wall time and peak resident
memory, the process's own high-water mark), so times include its start (about 3 s); they are indicative of the
machine the record names. ``--quick`` crops the sections and the montage tiles to ``--crop`` pixels
and runs the commands in this process (no memory figure): the test's mode.

Usage: OMP_NUM_THREADS=1 python benchmarks/single_image.py --montage -o benchmarks/results/single-image
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from orgaseg.cli import main as orgaseg_main
from orgaseg.datasets import load_dataset
from orgaseg.datasets.base import default_data_root
from orgaseg.environment import environment_record
from orgaseg.io import open_volume, write_labels

from clicks import draw_clicks, write_results
from refine_memory import measure

K = 8
SEED = 0
#: Pixel sizes in nm of the sections (cdeep3m-mito's is the dataset's assumption).
PIXEL_NM = {"vnc": 4.6, "cdeep3m-mito": 5.9}
#: Step 1's voxel sizes: the pixel size as Z (the README's advice), serial-section Z, none (the 1 nm guess).
VOXEL_SIZES = {"z = pixel": ["4.6", "4.6", "4.6"], "z = 50 nm": ["50", "4.6", "4.6"], "none (1 nm guess)": None}
CLICKS_PER_CLASS = {"cdeep3m-mito": 8, "vnc": 5}
INSTANCE_OPTIONS = ["--classes", "mitochondria", "--min-size-nm2", "20000", "--fill-holes"]
MAJORITY_NM = "12"
MONTAGE_TILES = 8


class Runner:
    """Runs ``orgaseg`` commands, each in a process of its own (timed, peak memory) or in this one (quick)."""

    def __init__(self, folder: Path, in_process: bool) -> None:
        self.folder, self.in_process = folder, in_process

    def __call__(self, *arguments: str) -> dict:
        arguments = [str(a) for a in arguments]
        if not self.in_process:
            return measure(arguments, self.folder)
        started = time.perf_counter()
        code = orgaseg_main([*arguments, "--quiet"])
        if code != 0:
            raise SystemExit(f"orgaseg {' '.join(arguments)} exited with {code}")
        return {"peak_gb": None, "wall_s": round(time.perf_counter() - started, 1)}


def middle_section(dataset, crop: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Raw pixels, reference class ids (one slice, zyx) and a description of a dataset's chosen section."""
    item = dataset.evaluation[0]
    z = item.raw.shape[0] // 2
    region = (slice(z, z + 1), slice(0, crop), slice(0, crop))
    return (np.asarray(item.raw.read(region)), np.asarray(item.reference.read(region)),
            f"{item.name} section {z}" + (f", top-left {crop} x {crop}" if crop else ""))


def write_clicks(path: Path, reference: np.ndarray, classes, per_class: int) -> Path:
    """``per_class`` seeded random clicks per class of a one-slice reference, as a ``y,x,name`` CSV."""
    drawn = draw_clicks(reference, len(classes), per_class, seed=SEED)
    rows = [f"{y},{x},{name}" for name, coords in zip(classes, drawn) for _, y, x in coords]
    path.write_text("y,x,name\n" + "\n".join(rows) + "\n")
    return path


def write_reference(path: Path, reference: np.ndarray) -> Path:
    """Reference class ids as a PNG (255, the ignore label, marks pixels not scored)."""
    Image.fromarray(reference[0].astype(np.uint8)).save(path)
    return path


def evaluate(run: Runner, prediction: Path, reference: Path, dataset, mode: str | None = None) -> dict:
    """``orgaseg evaluate`` of a prediction against a class-id reference; its report."""
    report = prediction.with_suffix(".report")
    run("evaluate", prediction, "--reference", reference, "--classes", *dataset.classes,
        "--background", *dataset.background, *(["--mode", mode] if mode else []), "-o", report)
    return json.loads((report / "report.json").read_text())


def count_instances(path: Path) -> int:
    """The number of instance ids in an ``orgaseg instances`` output."""
    ids = np.asarray(open_volume(path).read())
    return int(np.count_nonzero(np.unique(ids)))


def named_scores(report: dict, organelle: str = "mitochondria") -> dict:
    """An organelle's Dice, recall, precision (``--mode names`` report) and its named area over the reference's."""
    scores = report["names"]["per_class"][organelle]
    ratio = scores["sensitivity"] / scores["precision"] if scores["precision"] else None  # (tp/ref) / (tp/pred)
    return {"dice": scores["dice"], "recall": scores["sensitivity"], "precision": scores["precision"],
            "area_over_reference": ratio, "mean_dice": report["names"]["mean_dice"]}


def pixel_size_step(run: Runner, folder: Path, raw: Path, reference: Path, dataset) -> dict:
    """Step 1: the vnc section segmented at each of :data:`VOXEL_SIZES`, scored label-free."""
    out = {}
    for i, (label, voxel_size) in enumerate(VOXEL_SIZES.items()):
        segmentation = folder / f"vnc_k8_{i}.ome.zarr"
        timing = run("segment", raw, *(["--voxel-size", *voxel_size] if voxel_size else []), "-k", K,
                     "-o", segmentation)
        report = evaluate(run, segmentation, reference, dataset)
        out[label] = {"voxel_size_nm": voxel_size, "merge_mean_dice": report["merge"]["mean_dice"],
                      "strict_mean_dice": report["strict"]["mean_dice"],
                      "merge_mitochondria_dice": report["merge"]["per_class"]["mitochondria"]["dice"],
                      "segment": timing}
        print(f"vnc, voxel size {label}: merge mean Dice {out[label]['merge_mean_dice']:.3f}", flush=True)
    return out


def cdeep3m_step(run: Runner, folder: Path, dataset, crop: int | None) -> dict:
    """Step 2: a cdeep3m-mito section named by 8 clicks per class, with and without --refine; instances."""
    raw_pixels, reference, section = middle_section(dataset, crop)
    raw = folder / "cdeep3m.png"
    Image.fromarray(raw_pixels[0]).save(raw)
    reference_png = write_reference(folder / "cdeep3m_reference.png", reference)
    clicks = write_clicks(folder / "cdeep3m_clicks.csv", reference, dataset.classes, CLICKS_PER_CLASS["cdeep3m-mito"])
    pixel = str(PIXEL_NM["cdeep3m-mito"])
    segmentation = folder / "cdeep3m_k8.ome.zarr"
    run("segment", raw, "--voxel-size", pixel, pixel, pixel, "-k", K, "-o", segmentation)
    out = {"section": section, "pixel_nm": PIXEL_NM["cdeep3m-mito"],
           "clicks_per_class": CLICKS_PER_CLASS["cdeep3m-mito"]}
    for label, options in (("naming", []), ("refine", ["--refine"])):
        named = folder / f"cdeep3m_{label}.ome.zarr"
        run("name", segmentation, "--points", clicks, *options, "-o", named)
        scores = named_scores(evaluate(run, named, reference_png, dataset, mode="names"))
        instances = folder / f"cdeep3m_{label}_mito.ome.zarr"
        run("instances", named, *INSTANCE_OPTIONS, "--majority", MAJORITY_NM, "-o", instances)
        out[label] = {**scores, "instances": count_instances(instances)}
        print(f"cdeep3m-mito {label}: mitochondria Dice {scores['dice']:.3f}, "
              f"{out[label]['instances']} instances", flush=True)
    mask = (reference == dataset.classes.index("mitochondria")).astype(np.uint8)
    reference_named = write_labels(folder / "cdeep3m_reference.ome.zarr", mask,
                                   voxel_size=(PIXEL_NM["cdeep3m-mito"],) * 3, provenance={"source": section},
                                   label_names=["unassigned", "mitochondria"])
    counts = {}
    for label, options in (("cleaned", INSTANCE_OPTIONS), ("components", ["--classes", "mitochondria"])):
        instances = folder / f"cdeep3m_reference_{label}.ome.zarr"
        run("instances", reference_named, *options, "-o", instances)
        counts[label] = count_instances(instances)
    out["reference_instances"] = counts
    out["reference_area_fraction"] = float(mask.mean())
    return out


def vnc_naming_step(run: Runner, folder: Path, segmentation: Path, reference: np.ndarray,
                    reference_png: Path, dataset) -> dict:
    """Step 3: the vnc segmentation (z = pixel) named by 5 clicks per class."""
    clicks = write_clicks(folder / "vnc_clicks.csv", reference, dataset.classes, CLICKS_PER_CLASS["vnc"])
    named = folder / "vnc_named.ome.zarr"
    run("name", segmentation, "--points", clicks, "-o", named)
    scores = named_scores(evaluate(run, named, reference_png, dataset, mode="names"))
    print(f"vnc naming: mitochondria Dice {scores['dice']:.3f}, precision {scores['precision']:.3f}", flush=True)
    return {"clicks_per_class": CLICKS_PER_CLASS["vnc"], **scores}


def montage(volume, tiles: int, crop: int | None) -> np.ndarray:
    """``tiles`` x ``tiles`` sections of a stack (or their top-left ``crop`` pixels), 0, 1, ... row by row, cycling."""
    side = crop or volume.shape[1]
    rows = []
    for row in range(tiles):
        cells = []
        for column in range(tiles):
            z = (row * tiles + column) % volume.shape[0]
            cells.append(np.asarray(volume.read((slice(z, z + 1), slice(0, side), slice(0, side))))[0])
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def montage_step(run: Runner, folder: Path, dataset, crop: int | None) -> dict:
    """Step 4: the vnc montage through segment, name, instances and measure --raw, timed."""
    item = dataset.evaluation[0]
    pixels = montage(item.raw, MONTAGE_TILES, crop)
    reference = montage(item.reference, MONTAGE_TILES, crop)[np.newaxis]
    raw = folder / "montage.tif"
    pixel_um = PIXEL_NM["vnc"] / 1000
    tifffile.imwrite(raw, pixels, imagej=True, resolution=(1 / pixel_um, 1 / pixel_um), metadata={"unit": "um"})
    clicks = write_clicks(folder / "montage_clicks.csv", reference, dataset.classes, CLICKS_PER_CLASS["vnc"])
    segmentation, named = folder / "montage_k8.ome.zarr", folder / "montage_named.ome.zarr"
    instances = folder / "montage_mito.ome.zarr"
    steps = {"segment": run("segment", raw, "-k", K, "-o", segmentation),
             "name": run("name", segmentation, "--points", clicks, "-o", named),
             "instances": run("instances", named, *INSTANCE_OPTIONS, "-o", instances),
             "measure --raw": run("measure", instances, "--raw", raw, "-o", folder / "montage_mito.csv")}
    for name, timing in steps.items():
        print(f"montage {name}: {timing['wall_s']} s, peak {timing['peak_gb']} GB", flush=True)
    return {"shape": list(pixels.shape), "tiles": MONTAGE_TILES, "pixel_nm": PIXEL_NM["vnc"],
            "instances": count_instances(instances), "steps": steps}


def run_all(args) -> dict:
    started = time.perf_counter()
    # the checkout as the run starts: edits made while it runs are not what it measured
    environment = environment_record(Path(__file__).resolve().parents[1])
    crop = args.crop if args.quick else None
    vnc, cdeep3m = load_dataset("vnc", args.data_root), load_dataset("cdeep3m-mito", args.data_root)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        run = Runner(folder, in_process=args.quick)
        raw_pixels, reference, section = middle_section(vnc, crop)
        raw = folder / "vnc.png"
        Image.fromarray(raw_pixels[0]).save(raw)
        reference_png = write_reference(folder / "vnc_reference.png", reference)
        record = {"k": K, "seed": SEED, "quick": args.quick, "vnc_section": section,
                  "pixel_size": pixel_size_step(run, folder, raw, reference_png, vnc),
                  "cdeep3m": cdeep3m_step(run, folder, cdeep3m, crop),
                  "vnc_naming": vnc_naming_step(run, folder, folder / "vnc_k8_0.ome.zarr", reference,
                                                reference_png, vnc)}
        if args.montage:
            record["montage"] = montage_step(run, folder, vnc, crop)
    record.update({"wall_s": round(time.perf_counter() - started, 1), "note": args.note,
                   "command": shlex.join([Path(sys.executable).name, *sys.argv]),
                   "environment": environment})
    return record


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def to_markdown(record: dict) -> str:
    """The record as the page ``results.md``: what ran, on which sections, the scores and the montage's costs."""
    env = record["environment"]
    machine = env.get("machine", {})
    commit = (env.get("git", {}).get("commit") or "?")[:10] + (" (dirty)" if env.get("git", {}).get("dirty") else "")
    lines = ["# Single 2D images (the README's figures)", "",
             (f"`{record['command']}`: commit {commit}; {machine.get('cpu', 'CPU')}, {machine.get('cores', '?')} "
              f"cores{'; ' + record['note'] if record.get('note') else ''}; {record['wall_s']:.0f} s in all. "
              f"Baseline, K = {record['k']}, seed {record['seed']}; clicks drawn at random (seed {record['seed']}) "
              "from each section's reference."
              + (" **Quick mode: cropped sections, not the README's figures.**" if record["quick"] else "")), "",
             f"## Pixel size (vnc {record['vnc_section']})", "",
             ("| `--voxel-size` (nm) | | mean Dice (merge) | mean Dice (strict) | mitochondria Dice (merge) "
              "| segment (s) |"),
             "|---|---|---|---|---|---|"]
    for label, row in record["pixel_size"].items():
        lines.append(f"| {' '.join(row['voxel_size_nm']) if row['voxel_size_nm'] else '-'} | {label} | "
                     f"{_fmt(row['merge_mean_dice'])} | {_fmt(row['strict_mean_dice'])} | "
                     f"{_fmt(row['merge_mitochondria_dice'])} | {row['segment']['wall_s']} |")
    cdeep3m = record["cdeep3m"]
    references = cdeep3m["reference_instances"]
    lines += ["", (f"## Naming: cdeep3m-mito {cdeep3m['section']} ({cdeep3m['pixel_nm']} nm), "
                   f"{cdeep3m['clicks_per_class']} clicks per class"), "",
              "| | mitochondria Dice | recall | precision | area / reference | instances |",
              "|---|---|---|---|---|---|"]
    for label in ("naming", "refine"):
        row = cdeep3m[label]
        lines.append(f"| {'`name`' if label == 'naming' else '`name --refine`'} | {_fmt(row['dice'])} | "
                     f"{_fmt(row['recall'])} | {_fmt(row['precision'])} | {_fmt(row['area_over_reference'])} | "
                     f"{row['instances']} |")
    lines += ["", (f"Instances: `instances {' '.join(INSTANCE_OPTIONS)} --majority {MAJORITY_NM}`. The reference "
                   f"has {references['cleaned']} mitochondria after the same `instances` without `--majority`, "
                   f"{references['components']} connected components in all."), ""]
    vnc = record["vnc_naming"]
    lines += [f"## Naming: vnc {record['vnc_section']}, {vnc['clicks_per_class']} clicks per class", "",
              (f"Mitochondria Dice {_fmt(vnc['dice'])} (recall {_fmt(vnc['recall'])}, precision "
               f"{_fmt(vnc['precision'])}); mean Dice of the four classes {_fmt(vnc['mean_dice'])}.")]
    if "montage" in record:
        shown = record["montage"]
        lines += ["", (f"## A large image: {' x '.join(map(str, shown['shape']))} montage of vnc sections "
                       f"({shown['pixel_nm']} nm pixels)"), "",
                  ("Quick mode: the commands ran in this process, no memory figure." if record["quick"] else
                   "Each command in a process of its own; wall time includes its start (about 3 s)."), "",
                  "| command | wall (s) | peak memory (GB) |", "|---|---|---|"]
        lines += [f"| {name} | {step['wall_s']} | {'-' if step['peak_gb'] is None else step['peak_gb']} |"
                  for name, step in shown["steps"].items()]
        lines += ["", f"{shown['instances']} mitochondria instances."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(default_data_root()), help="folder holding vnc/ and cdeep3m-mito/")
    parser.add_argument("--montage", action="store_true", help="also step 4, the 8192 x 8192 montage (minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="cropped sections and tiles, commands in this process: a test, not the figures")
    parser.add_argument("--crop", type=int, default=96, help="--quick: the side of the crops in pixels")
    parser.add_argument("--note", default="", help="a remark recorded with the machine (e.g. other jobs running)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    record = run_all(args)
    write_results(Path(args.output), record, to_markdown(record))


if __name__ == "__main__":
    main()
