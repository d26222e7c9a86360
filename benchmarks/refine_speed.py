"""How long ``orgaseg name --refine`` takes to label a volume when the segmentation works on a coarser grid.

With a working pixel size coarser than the input's, the refine's logistic regression can be applied in
two ways that give the same labels: interpolate every feature channel onto the input grid and classify
each input voxel (what the network and the forest do), or interpolate only the classifier's scores and
the k-means scores, which are affine in the features (``RefinedClassifier.affine_scores``, what
logistic regression does). This script segments one stack of a dataset with the baseline at its
default working pixel, draws ``--clicks`` random clicks per class from the stack's own reference (seed
0), trains the refine's logistic regression on them (superpixel context 100,400, estimated priors:
``orgaseg name --refine``'s defaults), then labels the whole stack both ways, ``--repeats`` times each,
alternating, and records the wall time of every labelling pass and the fraction of voxels where the
two agree.

Usage: OMP_NUM_THREADS=1 python benchmarks/refine_speed.py --dataset cdeep3m-mito -o benchmarks/results/refine-speed-cdeep3m-mito
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import orgaseg
from orgaseg.datasets import load_dataset
from orgaseg.environment import environment_record
from orgaseg.labels import smallest_label_dtype
from orgaseg.organelles import name_clusters, points_from_arrays
from orgaseg.organelles.refine import label_with_classifier
from orgaseg.organelles.segmentation_features import rebuild_segmentation
from orgaseg.pipeline.runner import ArraySink

from clicks import draw_clicks, write_results

#: The stack each dataset is labelled on: (evaluation item, its input path under the data root).
STACKS = {"cdeep3m-mito": (1, "cdeep3m-mito/validation/images"), "vnc": (0, "vnc/stack1/raw")}


class FeaturePath:
    """The classifier without its affine scores: the block runner then interpolates every feature channel."""

    def __init__(self, classifier) -> None:
        self.classifier = classifier

    def __getattr__(self, name: str):
        if name in ("affine_scores", "scores", "labels_from_scores"):
            raise AttributeError(name)
        return getattr(self.classifier, name)


def run(args) -> dict:
    dataset = load_dataset(args.dataset, args.data_root)
    index, relative = STACKS[args.dataset]
    item = dataset.evaluation[index]
    reference = np.asarray(item.reference.read((slice(None),) * 3))
    coords = draw_clicks(reference, len(dataset.classes), args.clicks, seed=0)
    names = [name for name, drawn in zip(dataset.classes, coords) for _ in drawn]
    with tempfile.TemporaryDirectory() as folder:
        segmentation = orgaseg.segment(Path(args.data_root) / relative, k=args.k, voxel_size=dataset.voxel_size,
                                       output=Path(folder) / "seg.ome.zarr", seed=0)
        annotations = points_from_arrays(np.concatenate(coords), names, shape=reference.shape)
        started = time.perf_counter()
        refined = name_clusters(Path(folder) / "seg.ome.zarr", annotations=annotations, refine=True)
        command_s = time.perf_counter() - started
        classifier = refined.classifier
        job = rebuild_segmentation(segmentation.provenance, context=classifier.context)
        passes = {"scores": [], "features": []}
        labels = {}
        for _ in range(args.repeats):
            for way, labeller in (("features", FeaturePath(classifier)), ("scores", classifier)):
                sink = ArraySink(reference.shape, smallest_label_dtype(classifier.n_labels))
                started = time.perf_counter()
                label_with_classifier(job, labeller, sink)
                passes[way].append(round(time.perf_counter() - started, 2))
                labels[way] = sink.array
        grid = segmentation.provenance["config"].get("working_grid", {})
        return {
            "dataset": args.dataset, "stack": relative, "shape": list(reference.shape),
            "voxel_size_nm": list(dataset.voxel_size), "working_grid": grid, "k": args.k,
            "clicks_per_class": args.clicks, "context": list(classifier.context),
            "feature_channels": int(classifier.n_features), "scores_interpolated": int(classifier.clusterer.k
                                                                                        + len(classifier.model["coef"])),
            "labelling_s": passes, "name_refine_s": round(command_s, 2),
            "agreement": float(np.mean(labels["scores"] == labels["features"])),
            "differing_voxels": int(np.sum(labels["scores"] != labels["features"])),
            "environment": environment_record(Path(__file__).resolve().parents[1]),
        }


def to_markdown(record: dict) -> str:
    env = record["environment"]
    best = {way: min(times) for way, times in record["labelling_s"].items()}
    return "\n".join([
        f"# Refine labelling speed: {record['dataset']} ({record['stack']}, {' x '.join(map(str, record['shape']))})",
        "",
        (f"Baseline at its default working grid {record['working_grid'].get('working_voxel_size')} nm, K = "
         f"{record['k']}; {record['clicks_per_class']} random clicks per class; logistic regression, context "
         f"{record['context']}. Commit {env.get('git', {}).get('commit', '?')[:10]}; "
         f"{env.get('machine', {}).get('cpu', 'CPU')}, {env.get('machine', {}).get('cores', '?')} cores."),
        "",
        "| labelling pass | wall s (each repeat) | fastest |",
        "|---|---|---|",
        (f"| interpolate {record['feature_channels']} feature channels | {record['labelling_s']['features']} | "
         f"{best['features']:.1f} |"),
        (f"| interpolate {record['scores_interpolated']} scores | {record['labelling_s']['scores']} | "
         f"{best['scores']:.1f} |"),
        "",
        (f"Same label at {100 * record['agreement']:.4f}% of the voxels ({record['differing_voxels']} differ). "
         f"`name_clusters(..., refine=True)` in memory, training included: {record['name_refine_s']:.1f} s."),
    ]) + "\n"


def add_stack_arguments(parser: argparse.ArgumentParser, *, k: int, clicks: int) -> None:
    """The arguments of a refine run on one of :data:`STACKS`: dataset, data root, K, clicks per class, output."""
    parser.add_argument("--dataset", required=True, choices=sorted(STACKS))
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("-k", type=int, default=k)
    parser.add_argument("--clicks", type=int, default=clicks, help=f"random clicks per class (default {clicks})")
    parser.add_argument("-o", "--output", required=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stack_arguments(parser, k=6, clicks=20)
    parser.add_argument("--repeats", type=int, default=2, help="labelling passes each way (default 2)")
    args = parser.parse_args()
    record = run(args)
    write_results(Path(args.output), record, to_markdown(record))


if __name__ == "__main__":
    main()
