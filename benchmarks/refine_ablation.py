"""Which features and classifier settings make ``orgaseg name --refine`` read out the most from a few clicks.

A quick ablation beside ``benchmarks/clicks.py`` (which measures the library's own ``--refine`` at full
resolution): everything here happens on the working grid. The click and scoring slices of
``clicks.SPLITS`` are resampled in-plane to ``--pixel-size`` (anti-aliased), their references taken
by nearest neighbour, and the scores are Dice on that grid (so they are close to, not equal to,
full-resolution scores). For every combination of

- features: the baseline's filter bank (``orgaseg.compute_features``), with or without the superpixel
  context of each ``--context`` (:class:`orgaseg.features.context.SuperpixelContext`), each also with its
  mean on the adjacent slices with ``--z-context`` (:class:`orgaseg.features.context.SliceNeighbours`), plus the
  one-hot of K = 8 k-means fitted on the click slices, as ``--refine`` adds the cluster;
- classifier: logistic regression at each ``--C``, the network of ``--refine --classifier mlp`` (``--mlp``), a
  random forest (``--forest``), and linear discriminant analysis with a shrunk covariance (``--lda``);
- class frequencies predicted under: the clicks' (uniform), those estimated on 20,000 unannotated
  voxels (:func:`orgaseg.organelles.refine.estimate_priors`, ``--prior estimated``), and, as an
  upper reference no user has, the click slices' true frequencies;

``n`` clicks per class (``--clicks``) are drawn at random from the click slices' reference for each
seed, the classifier labels the scoring slices, and the mean over seeds is reported. ``--dense N`` adds an
upper reference no click budget reaches: N voxels per class of the click slices' reference (all of a
smaller class), as if every class had been painted, which shows how much a read-out of these features
can give at all.

Usage: OMP_NUM_THREADS=1 python benchmarks/refine_ablation.py --dataset vnc -o benchmarks/results/refine-ablation-vnc
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from skimage.transform import rescale
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import orgaseg
from orgaseg.datasets import load_dataset
from orgaseg.environment import environment_record
from orgaseg.features.context import SliceNeighbours, SuperpixelContext, parse_context
from orgaseg.organelles.refine import estimate_priors, make_network

from clicks import SPLITS, write_results

K = 8
UNANNOTATED = 20_000


class _Precomputed:
    """The filter bank's features of one stack, handed to :class:`SuperpixelContext` as an extractor."""

    halo = (0, 0, 0)

    def __init__(self, features: np.ndarray) -> None:
        self.features = features
        self.n_features = features.shape[-1]

    def __call__(self, block, *, origin=(0, 0, 0)):
        return self.features

    def config(self):
        return {}


def working_split(dataset, split, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw slices resampled in-plane to ``pixel_size`` nm and their reference on the same grid."""
    index, first, count = split
    item = dataset.evaluation[index]
    region = (slice(first, first + count), slice(None), slice(None))
    raw = np.asarray(item.raw.read(region)).astype(np.float32)
    reference = np.asarray(item.reference.read(region))
    factor = dataset.voxel_size[1] / pixel_size
    raw = np.stack([rescale(s, factor, anti_aliasing=factor < 1, preserve_range=True) for s in raw]).astype(np.float32)
    rows, cols = (np.clip(((np.arange(n) + 0.5) / factor).astype(int), 0, m - 1)
                  for n, m in zip(raw.shape[1:], reference.shape[1:]))
    return raw, reference[:, rows][:, :, cols]


def dice(predicted: np.ndarray, reference: np.ndarray, n_classes: int) -> list[float]:
    valid = (reference >= 0) & (reference < n_classes)
    out = []
    for c in range(n_classes):
        p, r = (predicted == c) & valid, reference == c
        out.append(float(2 * np.sum(p & r) / max(1, p.sum() + r.sum())))
    return out


def run(args) -> dict:
    started = time.time()
    dataset = load_dataset(args.dataset)
    classes = list(dataset.classes)
    n_classes = len(classes)
    voxel_size = (dataset.voxel_size[0], args.pixel_size, args.pixel_size)
    stacks = {}
    splits = {"click": SPLITS[args.dataset]["click"], "score": args.score or SPLITS[args.dataset]["score"]}
    for name, split in splits.items():
        raw, reference = working_split(dataset, split, args.pixel_size)
        features = np.asarray(orgaseg.compute_features(raw, method="baseline", voxel_size=voxel_size,
                                                       pixel_size="native"), np.float32)
        low, high = np.percentile(raw, [0.5, 99.5])
        normalised = np.clip((raw - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)
        with_context = {"none": features}
        for context in args.context:
            with_context[context] = SuperpixelContext(_Precomputed(features), parse_context(context))(normalised)
        if args.z_context:  # every variant once more with the mean over the adjacent slices
            with_context.update({f"{label} + z": SliceNeighbours(_Precomputed(values))(normalised)
                                 for label, values in with_context.items()})
        stacks[name] = {"reference": reference, "features": with_context}
        print(f"{name}: {raw.shape}, {features.shape[-1]} channels ({time.time() - started:.0f} s)", flush=True)
    # the one-hot cluster of K-means fitted on the click slices, as --refine adds it
    click_pixels = stacks["click"]["features"]["none"].reshape(-1, stacks["click"]["features"]["none"].shape[-1])
    scaler = StandardScaler().fit(click_pixels[::13])
    kmeans = KMeans(K, n_init=3, random_state=0).fit(scaler.transform(click_pixels[::13]))
    for stack in stacks.values():
        pixels = stack["features"]["none"].reshape(-1, click_pixels.shape[1])
        stack["one_hot"] = np.eye(K, dtype=np.float32)[kmeans.predict(scaler.transform(pixels))]
    click_reference, score_reference = stacks["click"]["reference"], stacks["score"]["reference"]
    valid = (click_reference >= 0) & (click_reference < n_classes)
    true_frequencies = np.bincount(click_reference[valid], minlength=n_classes) / valid.sum()
    classifiers = {f"logistic C={c:g}": (lambda c=c: LogisticRegression(C=c, max_iter=3000)) for c in args.C}
    if args.mlp:
        classifiers["mlp"] = make_network
    if args.forest:
        classifiers["forest"] = lambda: RandomForestClassifier(100, n_jobs=1, random_state=0)
    if args.lda:
        classifiers["lda"] = lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    rows = []
    for n in args.clicks + ([f"dense {args.dense}"] if args.dense else []):
        for context in stacks["click"]["features"]:
            design = {name: np.concatenate([stack["features"][context].reshape(len(stack["one_hot"]), -1),
                                            stack["one_hot"]], axis=1) for name, stack in stacks.items()}
            scaler = StandardScaler().fit(design["click"][::97])
            click_design, score_design = scaler.transform(design["click"]), scaler.transform(design["score"])
            for label, make in classifiers.items():
                per_seed = {"clicks": [], "estimated": [], "true": []}
                for seed in args.seeds:
                    rng = np.random.default_rng(seed)
                    per_class = [np.flatnonzero(click_reference.reshape(-1) == c) for c in range(n_classes)]
                    counts = [n if isinstance(n, int) else min(args.dense, len(v)) for v in per_class]
                    chosen = [rng.choice(v, m, replace=False) for v, m in zip(per_class, counts)]
                    targets = np.repeat(np.arange(n_classes), counts)
                    model = make().fit(click_design[np.concatenate(chosen)], targets)
                    posteriors = model.predict_proba(score_design)
                    train = np.bincount(targets, minlength=n_classes) / len(targets)
                    unannotated = rng.choice(len(click_design), UNANNOTATED, replace=False)
                    estimated = estimate_priors(model.predict_proba(click_design[unannotated]), train)
                    for prior, frequencies in (("clicks", train), ("estimated", estimated), ("true", true_frequencies)):
                        predicted = np.argmax(posteriors * (frequencies / train), axis=1).reshape(score_reference.shape)
                        per_seed[prior].append(dice(predicted, score_reference, n_classes))
                for prior, scores in per_seed.items():
                    per_class = np.mean(scores, axis=0)
                    rows.append({"clicks": n, "context": context, "classifier": label, "prior": prior,
                                 "per_class": dict(zip(classes, per_class.round(4).tolist())),
                                 "mean_dice": round(float(per_class.mean()), 4)})
                print(f"n={n} context={context} {label}: " + ", ".join(
                    f"{r['prior']} {r['mean_dice']:.3f}" for r in rows[-3:]), flush=True)
    return {"dataset": args.dataset, "classes": classes, "pixel_size_nm": args.pixel_size,
            "click_split": splits["click"], "score_split": splits["score"],
            "k": K, "seeds": args.seeds, "rows": rows, "wall_s": round(time.time() - started, 1),
            "environment": environment_record(Path(__file__).resolve().parents[1])}


def to_markdown(record: dict) -> str:
    env = record["environment"]
    organelle = "mitochondria"
    lines = [f"# Refine ablation: {record['dataset']} at {record['pixel_size_nm']:g} nm (working-grid Dice)", "",
             f"Clicks from evaluation item, first slice, count {tuple(record['click_split'])}; scored on "
             f"{tuple(record['score_split'])}. Seeds {record['seeds']}; commit {env.get('git', {}).get('commit', '?')[:10]}; "
             f"{env.get('machine', {}).get('cpu', 'CPU')}; {record['wall_s']:.0f} s.", "",
             "| clicks | context | classifier | prior | mean Dice | mitochondria |", "|---|---|---|---|---|---|"]
    for row in record["rows"]:
        lines.append(f"| {row['clicks']} | {row['context']} | {row['classifier']} | {row['prior']} | "
                     f"{row['mean_dice']:.3f} | {row['per_class'].get(organelle, float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def _split(text: str) -> tuple[int, int, int]:
    try:
        item, first, count = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ITEM,FIRST,COUNT (three integers), got {text!r}") from None
    return item, first, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(SPLITS))
    parser.add_argument("--pixel-size", type=float, help="working pixel size in nm (default: the split's)")
    parser.add_argument("--context", nargs="+", default=["100,400"], help="superpixel sizes, one variant each")
    parser.add_argument("--C", type=float, nargs="+", default=[1.0, 0.1], help="logistic regression's C values")
    parser.add_argument("--forest", action="store_true", help="also a random forest of 100 trees")
    parser.add_argument("--mlp", action="store_true", help="also the network of --classifier mlp")
    parser.add_argument("--lda", action="store_true", help="also linear discriminant analysis (shrunk covariance)")
    parser.add_argument("--z-context", action="store_true",
                        help="each feature variant also with its mean on the adjacent slices (--z-context)")
    parser.add_argument("--dense", type=int, help="also N labelled voxels per class: the read-out's upper reference")
    parser.add_argument("--clicks", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--score", type=_split, metavar="ITEM,FIRST,COUNT",
                        help="score on these slices of evaluation item ITEM instead of the split's "
                             "(e.g. 0,12,4: the click volume's slices 12-15, to separate the features' limit "
                             "from the difference between two volumes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    if args.pixel_size is None:
        args.pixel_size = SPLITS[args.dataset]["pixel_size"]
    record = run(args)
    write_results(Path(args.output), record, to_markdown(record))


if __name__ == "__main__":
    main()
