"""Dice against the number of clicks per class: naming clusters alone, and refining with the same clicks.

For one dataset, a *click volume* and a *scoring volume* (declared below: the clicks are drawn only
from the click volume's reference, the scores only from the scoring volume's) are segmented with
``--method`` (default the baseline, filter bank + k-means; ``--model`` for a learned one) for every K in
``--k``: k-means is fitted on the click volume
and reused on the scoring volume (``orgaseg segment --centers``), so cluster ids mean the same in
both. For each seed, up to ``max(--clicks)`` voxels per class are drawn at random from the click
volume's reference; the first ``n`` of them are the ``n`` clicks (nested sets, so curves are
smooth in ``n``). For every ``n``:

- *naming*: the clicks name the clusters by majority vote (``orgaseg name``); the scoring volume's
  clusters take those names, unassigned clusters predict nothing; Dice per class by name;
- *refine*: the clicks' dense features, computed through the segmentation's own stages (rebuilt from
  its provenance), plus their cluster (one-hot) train the classifier of ``orgaseg name --refine``
  (each of ``--classifiers``: logistic regression and the network for every ``n``, a random forest at
  ``--forest-clicks``), once for each
  ``--context`` (superpixel sizes whose feature means and spreads are appended, or ``none``; with ``--z-context``
  all of it also averaged over the adjacent slices), scored under class
  frequencies estimated on unannotated voxels of the click volume (``--prior estimated``, logistic
  regression's and the network's default) and under the clicks' own (``--prior clicks``, the forest's default). It
  labels every voxel of the scoring volume from its features, block by block as ``orgaseg name
  --refine`` does.

The label-free reference points are k-means' merge-mode (Hungarian, then majority) Dice on the
scoring volume for each K. Results: ``results.json`` and ``results.md`` in ``--output``.

Usage: OMP_NUM_THREADS=1 python benchmarks/clicks.py --dataset vnc -o benchmarks/results/clicks-vnc
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

import orgaseg
from orgaseg.datasets import load_dataset
from orgaseg.environment import environment_record
from orgaseg.features.context import DEFAULT_CONTEXT_PX, parse_context
from orgaseg.evaluation import UNMATCHED, confusion_matrix, evaluate
from orgaseg.evaluation.matching import class_confusion
from orgaseg.labels import IGNORE_LABEL
from orgaseg.organelles.annotations import points_from_arrays
from orgaseg.organelles.naming import vote
from orgaseg.organelles.refine import CLASSIFIERS, sample_unannotated, train_classifier
from orgaseg.organelles.segmentation_features import features_at, rebuild_segmentation
from orgaseg.pipeline.runner import plan_blocks

#: Dataset -> (click volume, scoring volume): (evaluation item index, first slice, slices), and the
#: working pixel size (the best label-free one in benchmarks/results: baseline at 18.4 and 23.6 nm).
SPLITS = {
    "vnc": {"click": (0, 0, 4), "score": (0, 8, 4), "pixel_size": 18.4},
    "cdeep3m-mito": {"click": (0, 0, 4), "score": (1, 0, 4), "pixel_size": 23.6},
}


def read_split(dataset, split) -> tuple[np.ndarray, np.ndarray, str]:
    """Raw slices, reference class ids and a description of one split."""
    index, first, count = split
    item = dataset.evaluation[index]
    region = (slice(first, first + count), slice(None), slice(None))
    raw = np.asarray(item.raw.read(region))
    reference = np.asarray(item.reference.read(region))
    return raw, reference, f"{item.name} slices {first}-{first + count - 1}"


def draw_clicks(reference: np.ndarray, n_classes: int, per_class: int, seed: int) -> list[np.ndarray]:
    """For each class, ``per_class`` voxels of the reference in a seeded random order."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_classes):
        voxels = np.argwhere(reference == c)
        out.append(voxels[rng.choice(len(voxels), min(per_class, len(voxels)), replace=False)])
    return out


def named_dice(predicted: np.ndarray, reference: np.ndarray, names, classes, background) -> dict:
    """Dice of each class, taking a predicted id as the class of the same name (unassigned: none)."""
    confusion = confusion_matrix(predicted, reference, n_clusters=len(names), n_classes=len(classes),
                                 ignore=(IGNORE_LABEL,))
    mapping = np.array([classes.index(n) if n in classes else UNMATCHED for n in names])
    merged = class_confusion(confusion, mapping)
    dice = {}
    for c, name in enumerate(classes):
        tp, predicted_c, reference_c = merged[c, c], merged[c].sum(), merged[:, c].sum()
        dice[name] = float(2 * tp / (predicted_c + reference_c)) if predicted_c + reference_c else 0.0
    organelles = [dice[c] for c in classes if c not in background]
    return {"per_class": dice, "mean_dice": float(np.mean(list(dice.values()))),
            "mean_dice_organelles": float(np.mean(organelles))}


def run(args) -> dict:
    started = time.time()
    dataset = load_dataset(args.dataset)
    classes, background = list(dataset.classes), list(dataset.background)
    split = SPLITS[args.dataset]
    click_raw, click_ref, click_name = read_split(dataset, split["click"])
    score_raw, score_ref, score_name = read_split(dataset, split["score"])
    voxel_size = dataset.voxel_size
    pixel_size = args.pixel_size if args.pixel_size is not None else split["pixel_size"]
    options = dict(option.split("=", 1) for option in args.option)
    common = dict(method=args.method, model=args.model, features=args.features, options=options or None,
                  pixel_size=pixel_size, voxel_size=voxel_size, seed=0, device=args.device,
                  block_shape=(1,) + click_raw.shape[1:])
    per_k = {}
    for k in args.k:
        t = time.time()
        fitted = orgaseg.segment(click_raw, k=k, **common)
        scored = orgaseg.segment(score_raw, centers=fitted.model, **common)
        label_free = evaluate(scored.labels, score_ref, classes=classes, background=background, mode="merge")
        per_k[k] = {"click_seg": fitted, "score_seg": scored, "label_free": label_free.to_dict()["merge"]}
        print(f"K={k}: k-means merge mean Dice {per_k[k]['label_free']['mean_dice']:.3f} ({time.time() - t:.0f} s)",
              flush=True)
    most = max(args.clicks)
    draws = {seed: draw_clicks(click_ref, len(classes), most, seed) for seed in args.seeds}
    results = {"naming": {}, "refine": {}}
    for k, entry in per_k.items():  # naming alone: a vote per K, cheap
        click_labels, score_labels = entry["click_seg"].labels, entry["score_seg"].labels
        for n in args.clicks:
            for seed, per_class in draws.items():
                coords = np.concatenate([c[:n] for c in per_class])
                names = [classes[c] for c, rows in enumerate(per_class) for _ in rows[:n]]
                annotations = points_from_arrays(coords, names, shape=click_raw.shape)
                naming = vote(click_labels[tuple(coords.T)], annotations, k)
                predicted = naming.cluster_ids[score_labels]
                scores = named_dice(predicted, score_ref, naming.names, classes, background)
                results["naming"].setdefault(str(k), {}).setdefault(str(n), []).append({"seed": seed, **scores})
    # refining: features of every scoring voxel once per context, as the block runner computes them for --refine
    k = args.refine_k
    click_seg, score_seg = per_k[k]["click_seg"], per_k[k]["score_seg"]
    names = ["unassigned", *classes]
    all_coords = np.concatenate([np.concatenate(per_class) for per_class in draws.values()])
    offsets = np.cumsum([0] + [sum(len(c) for c in per_class) for per_class in draws.values()])
    for context in args.context:
        label = "no context" if not parse_context(context) else f"context {context}"
        label += " + adjacent slices" if args.z_context else ""
        click_job = rebuild_segmentation(click_seg.provenance, raw=click_raw, device=args.device, context=context,
                                         z_context=args.z_context)
        score_job = rebuild_segmentation(score_seg.provenance, raw=score_raw, device=args.device, context=context,
                                         z_context=args.z_context)
        t = time.time()
        all_features = features_at(click_job, all_coords)
        blocks = plan_blocks(score_job.job, score_job.block_shape)
        score_features = [score_job.job.features(block) for block in blocks]
        print(f"{label}: features of {len(all_coords)} clicks and {len(blocks)} scoring blocks: "
              f"{time.time() - t:.0f} s", flush=True)
        # the unannotated voxels --refine estimates class frequencies on (of the click volume, per seed)
        unannotated = {}
        for seed in draws:
            coords = sample_unannotated(click_job, seed=seed)
            unannotated[seed] = (features_at(click_job, coords), click_seg.labels[tuple(coords.T)])
        for classifier in args.classifiers:
            counts = args.forest_clicks if classifier == "forest" else args.clicks
            for n in counts:
                for i, (seed, per_class) in enumerate(draws.items()):
                    t = time.time()
                    rows, targets = [], []
                    start = offsets[i]
                    for c, chosen in enumerate(per_class):
                        rows.append(np.arange(start, start + min(n, len(chosen))))
                        targets += [c + 1] * min(n, len(chosen))
                        start += len(chosen)
                    rows = np.concatenate(rows)
                    coords = all_coords[rows]
                    fitted = train_classifier(all_features[rows], click_seg.labels[tuple(coords.T)],
                                              np.array(targets), clusterer=click_job.clusterer, n_labels=len(names),
                                              kind=classifier, unannotated=unannotated[seed],
                                              context=click_job.context, z_context=click_job.z_context, seed=seed)
                    # the same classifier under the estimated and under the clicks' class frequencies (--prior)
                    variants = {f"{classifier}, {label}, estimated priors": fitted,
                                f"{classifier}, {label}, click priors": dataclasses.replace(
                                    fitted, priors=fitted.train_priors)}
                    for variant, model in variants.items():
                        predicted = np.zeros(score_raw.shape, np.uint8)
                        for block, features in zip(blocks, score_features):
                            predicted[block.region] = model.predict(features)
                        scores = named_dice(predicted, score_ref, names, classes, background)
                        scores["priors"] = model.priors.tolist()
                        results["refine"].setdefault(variant, {}).setdefault(str(n), []).append(
                            {"seed": seed, **scores})
                        print(f"refine {variant} n={n} seed={seed}: mean Dice {scores['mean_dice']:.3f}, "
                              f"mitochondria {scores['per_class']['mitochondria']:.3f} ({time.time() - t:.0f} s)",
                              flush=True)
    return {
        "dataset": args.dataset,
        "classes": classes,
        "background": background,
        "method": args.method,
        "model": args.model,
        "features": args.features,
        "options": options,
        "pixel_size_nm": pixel_size,
        "voxel_size_nm": list(voxel_size),
        "click_split": click_name,
        "score_split": score_name,
        "clicks_per_class": args.clicks,
        "classifiers": args.classifiers,
        "forest_clicks_per_class": args.forest_clicks,
        "z_context": args.z_context,
        "seeds": args.seeds,
        "refine_k": k,
        "label_free": {str(k): entry["label_free"] for k, entry in per_k.items()},
        "naming": results["naming"],
        "refine": results["refine"],
        "notes": dataset.notes,
        "wall_s": round(time.time() - started, 1),
        "environment": environment_record(Path(__file__).resolve().parents[1]),
    }


def mean_over_seeds(runs: list[dict], key: str, name: str | None = None) -> tuple[float, float]:
    values = [r["per_class"][name] if name else r[key] for r in runs]
    return float(np.mean(values)), float(np.std(values))


def summarise(record: dict) -> dict:
    """Mean (std) over seeds per count; clicks where naming reaches 90% of merge-optimal Dice; refine vs label-free."""
    organelle = "mitochondria"
    best_k = max(record["label_free"], key=lambda k: record["label_free"][k]["mean_dice"])
    best = record["label_free"][best_k]
    summary = {"best_label_free": {"k": int(best_k), "mean_dice": best["mean_dice"],
                                   organelle: best["per_class"][organelle]["dice"]},
               "naming_90_percent": {}, "refine_at": {}}
    for k, per_n in record["naming"].items():
        target = 0.9 * record["label_free"][k]["mean_dice"]
        reached = [int(n) for n, runs in per_n.items() if mean_over_seeds(runs, "mean_dice")[0] >= target]
        summary["naming_90_percent"][k] = min(reached) if reached else None
    for classifier, per_n in record["refine"].items():
        for n in ("10", "50", "200"):
            if n in per_n:
                mean = mean_over_seeds(per_n[n], "mean_dice")[0]
                mito = mean_over_seeds(per_n[n], "", organelle)[0]
                summary["refine_at"].setdefault(classifier, {})[n] = {
                    "mean_dice": mean, organelle: mito,
                    "gain_mean_dice": mean - best["mean_dice"],
                    f"gain_{organelle}": mito - best["per_class"][organelle]["dice"]}
    return summary


def to_markdown(record: dict) -> str:
    classes = record["classes"]
    summary = record["summary"]
    env = record["environment"]
    lines = [f"# Clicks against Dice: {record['dataset']}", "",
             f"Method {record['method']} (k-means) at {record['pixel_size_nm']:g} nm; clicks drawn from "
             f"{record['click_split']}, scored on {record['score_split']}; seeds {record['seeds']}; mean (std) over "
             f"seeds. Commit {env.get('git', {}).get('commit', '?')[:10]}; {env.get('machine', {}).get('cpu', 'CPU')}, "
             f"{record['wall_s']:.0f} s.", ""]
    lines += ["## Label-free (k-means, merge mode: Hungarian then majority, with the full reference)", "",
              "| K | " + " | ".join(classes) + " | mean Dice |", "|---" * (len(classes) + 2) + "|"]
    for k, scores in record["label_free"].items():
        lines.append(f"| {k} | " + " | ".join(f"{scores['per_class'][c]['dice']:.3f}" for c in classes)
                     + f" | {scores['mean_dice']:.3f} |")
    lines += ["", "## Naming alone (majority vote of the clicks; mean Dice)", "",
              "| clicks per class | " + " | ".join(f"K={k}" for k in record["naming"]) + " |",
              "|---" * (len(record["naming"]) + 1) + "|"]
    for n in record["clicks_per_class"]:
        cells = [mean_over_seeds(record["naming"][k][str(n)], "mean_dice") for k in record["naming"]]
        lines.append(f"| {n} | " + " | ".join(f"{m:.3f} ({s:.3f})" for m, s in cells) + " |")
    lines.append("| 90% of merge-optimal reached at | " + " | ".join(
        str(v) if v is not None else "not reached" for v in summary["naming_90_percent"].values()) + " |")
    lines += ["", f"## Refine (K = {record['refine_k']}; features, with or without superpixel context, + cluster one-hot)",
              "",
              "| classifier | clicks per class | " + " | ".join(classes) + " | mean Dice |",
              "|---" * (len(classes) + 3) + "|"]
    for classifier, per_n in record["refine"].items():
        for n, runs in per_n.items():
            cells = [mean_over_seeds(runs, "", c) for c in classes] + [mean_over_seeds(runs, "mean_dice")]
            lines.append(f"| {classifier} | {n} | " + " | ".join(f"{m:.3f} ({s:.3f})" for m, s in cells) + " |")
    best = summary["best_label_free"]
    lines += ["", f"Best label-free here: K = {best['k']}, mean Dice {best['mean_dice']:.3f}, mitochondria "
              f"{best['mitochondria']:.3f}. Refine against it (target: +0.12 mean, +0.10 mitochondria at 50 clicks):", ""]
    for classifier, per_n in summary["refine_at"].items():
        for n, v in per_n.items():
            lines.append(f"- {classifier}, {n} clicks per class: mean {v['mean_dice']:.3f} ({v['gain_mean_dice']:+.3f}), "
                         f"mitochondria {v['mitochondria']:.3f} ({v['gain_mitochondria']:+.3f})")
    return "\n".join(lines) + "\n"


def write_results(output: Path, record: dict, markdown: str) -> None:
    """``results.json`` and ``results.md`` into the folder ``output`` (made if missing), and the markdown on stdout."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (output / "results.md").write_text(markdown)
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(SPLITS))
    parser.add_argument("--k", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--refine-k", type=int, default=10)
    parser.add_argument("--clicks", type=int, nargs="+", default=[1, 3, 10, 30, 50, 100, 200])
    parser.add_argument("--classifiers", nargs="+", choices=CLASSIFIERS, default=list(CLASSIFIERS),
                        help="refining classifiers to measure (default: all)")
    parser.add_argument("--forest-clicks", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--context", nargs="+", default=[",".join(map(str, DEFAULT_CONTEXT_PX)), "none"],
                        help="superpixel context sizes of the refining classifier's features, one run each")
    parser.add_argument("--z-context", action="store_true",
                        help="the classifiers also read the features' mean on the adjacent slices (--z-context)")
    parser.add_argument("--method", default="baseline", help="the segmentation method (default baseline)")
    parser.add_argument("--model", help="its checkpoint, for a learned method")
    parser.add_argument("--features", help="dense features (default: the method's)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a stage option")
    parser.add_argument("--pixel-size", type=float, help="working pixel size in nm (default: the split's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    if args.refine_k not in args.k:
        parser.error("--refine-k must be one of --k")
    record = run(args)
    record["summary"] = summarise(record)
    write_results(Path(args.output), record, to_markdown(record))


if __name__ == "__main__":
    main()
