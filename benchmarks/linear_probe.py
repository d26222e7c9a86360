"""How much class information do a method's features hold? A linear probe on a few slices.

Clustering can fail because the features lack the information or because k-means cannot find it
in them. This script tells the two apart: it computes a method's per-pixel features on some slices
of a dataset's first evaluation volume, fits a logistic regression (with the reference labels: a
diagnostic, not a method) on pixels of the even slices and scores per-class Dice on pixels of the
odd slices. On the same pixels it fits k-means (K = 8, standardised features, as the pipeline does)
on the even slices and scores its clusters on the odd ones in merge mode: a probe far above k-means
means the information is there but not where k-means looks (in the directions of largest variance).
It also prints the class share of the variance: the between-class part of the standardised features'
total variance (what k-means, which minimises within-cluster variance, can use).

Usage: python benchmarks/linear_probe.py --dataset vnc --slices 0 1 2 3 \
           [--method baseline] \
           [--method maester --model runs/maester-vnc-cpu.pt --options features=expand-stride,stride=40]
Repeat --method to compare several; each learned method takes the next --model and the next --options
(NAME=VALUE pairs, as `orgaseg segment` takes them; "-" for none).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import orgaseg
from orgaseg.cluster import fit_kmeans
from orgaseg.environment import environment_record
from orgaseg.methods import METHODS


def probe_features(item, method: str, model, options, slices, per_slice: int, seed: int):
    """Features and reference classes of up to ``per_slice`` scored pixels of each slice in ``slices``.

    Each slice's features are computed as a segmentation block of one whole slice computes them
    (``orgaseg.compute_features``, with the block's halo); ``options`` may name the dense features
    (``features``) beside stage options.
    """
    options = dict(options or {})
    features_name = options.pop("features", None)
    rng = np.random.default_rng(seed)
    features, labels, groups = [], [], []
    for z in slices:
        region = (slice(z, z + 1), slice(0, item.raw.shape[1]), slice(0, item.raw.shape[2]))
        f = orgaseg.compute_features(item.raw, region, method=method, model=model, features=features_name,
                                     options=options or None, seed=seed, device="cpu")[0]
        ref = item.reference.read(region)[0]
        ys, xs = np.nonzero(item.mask.read(region)[0])
        pick = rng.choice(len(ys), size=min(per_slice, len(ys)), replace=False)
        features.append(f[ys[pick], xs[pick]])
        labels.append(ref[ys[pick], xs[pick]])
        groups.append(np.full(len(pick), z))
    return np.concatenate(features), np.concatenate(labels), np.concatenate(groups)


def parse_options(text: str) -> dict:
    """``features=expand-stride,stride=40`` as a dict (integers converted); ``-`` for none."""
    if text == "-":
        return {}
    pairs = (item.partition("=") for item in text.split(","))
    return {name: int(value) if value.isdigit() else value for name, _, value in pairs}


def class_variance_share(x: np.ndarray, y: np.ndarray) -> float:
    """Between-class variance over total variance of standardised features (summed over features)."""
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    between = sum(np.sum(y == c) * np.sum(x[y == c].mean(axis=0) ** 2) for c in np.unique(y))
    return float(between / np.sum(x**2))


def dice_per_class(truth, pred, n_classes):
    return [2 * np.sum((truth == c) & (pred == c)) / max(1, np.sum(truth == c) + np.sum(pred == c))
            for c in range(n_classes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="vnc")
    parser.add_argument("--slices", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--per-slice", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", action="append", required=True)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--options", action="append", default=[])
    args, _ = parser.parse_known_args()
    data = orgaseg.load_dataset(args.dataset)
    item = data.evaluation[0]
    models = iter(args.model)
    option_lists = iter(args.options)
    print("environment: " + json.dumps(environment_record()), flush=True)
    print(f"linear probe on {data.name} {item.name}, slices {args.slices} (train on even, test on odd); "
          f"Dice per class: {', '.join(data.classes)}")
    for method in args.method:
        spec = METHODS[method]
        model = next(models) if spec.learns else None
        options = parse_options(next(option_lists, "-")) if spec.learns else None
        started = time.perf_counter()
        x, y, z = probe_features(item, method, model, options, args.slices, args.per_slice, args.seed)
        train, test = z % 2 == 0, z % 2 == 1
        scaler = StandardScaler().fit(x[train])
        probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(x[train]), y[train])
        dice = dice_per_class(y[test], probe.predict(scaler.transform(x[test])), len(data.classes))
        clusters = fit_kmeans(x[train], 8, seed=args.seed).predict(x[test])
        merge = orgaseg.evaluate(clusters[None], y[test][None], classes=data.classes, background=data.background,
                                 mode="merge").to_dict()["merge"]
        kmeans_dice = [merge["per_class"][c]["dice"] for c in data.classes]
        label = f"{method} {Path(model).stem} {options}" if spec.learns else method
        print(f"{label}, {x.shape[1]} features, class share of the variance {class_variance_share(x, y):.3f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        for name, scores in (("linear probe", dice), ("k-means K=8", kmeans_dice)):
            print(f"    {name:<13} Dice " + "  ".join(f"{c} {d:.3f}" for c, d in zip(data.classes, scores))
                  + f"  mean {np.mean(scores):.3f}", flush=True)


if __name__ == "__main__":
    main()
