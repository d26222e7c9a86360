"""Han et al.'s Fig. 3 on our data: t-SNE of the semantic subspace (dims 1-8) against dims 9-16.

Patches are centred on reference voxels of a benchmark dataset's first
evaluation volume (``--per-class`` per class, seed 0), each with one
transformed copy (random rotation, elastic jitter, centre shift, as in
training; no intensity augmentation), read at the checkpoint's working pixel
size and standardised as at inference. Their latent means are split into
dims 1-8 (the subspace the multi-similarity loss shapes) and dims 9-16, each
embedded in 2D by t-SNE (scikit-learn, perplexity 30, PCA initialisation),
coloured by reference class, with each patch joined to its transformed copy
by a line. Also recorded, in the latent space itself: the mean distance of a
patch to its copy over the mean distance between patches (lower: more
invariant) and the k-nearest-neighbour class agreement (k = 10).

Usage:
    python benchmarks/han_vae_embedding.py CHECKPOINT -o FIGURE.png [--results DIR] [--dataset vnc] [--per-class 80]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import orgaseg
from orgaseg.environment import environment_record
from orgaseg.io import compute_normalization
from orgaseg.io.partial import write_atomic
from orgaseg.methods.han_vae import PatchPairSampler, PatchSampling
from orgaseg.models.encoder import load_encoder
from orgaseg.models.vae3d import standardize_patches
from orgaseg.pipeline.resample import resampled_volume
from orgaseg.viz._figure import new_figure, save_png
from orgaseg.viz.colors import class_colors


def pair_latents(encoder, item, per_class: int, n_classes: int, seed: int):
    """Latent means ``(N, 2, D)`` of patches centred on reference voxels and of a transformed copy; their classes."""
    working = resampled_volume(item.raw, encoder.pixel_size_nm)
    sampler = PatchPairSampler([working], [compute_normalization(working, seed=seed)], ndim=encoder.ndim,
                               patch=encoder.patch, sampling=PatchSampling(positives=1, noise=0.0), seed=seed)
    reference = item.reference.read()
    rng = np.random.default_rng(seed)
    native = np.asarray(item.raw.voxel_size, dtype=np.float64)
    radius = encoder.radius * min(working.voxel_size[1:])
    margin = int(np.ceil(2 * radius / native[1:].min())) + 1
    groups, classes = [], []
    for c in range(n_classes):
        z, y, x = np.nonzero(reference[:, margin:-margin, margin:-margin] == c)
        if len(z) == 0:
            continue
        chosen = rng.choice(len(z), size=min(per_class, len(z)), replace=False)
        for i in chosen:
            position = (np.array([z[i], y[i] + margin, x[i] + margin]) + 0.5) * native  # nm
            if encoder.ndim == 3:
                group = sampler.patch_group(0, position, radius, rng)
            else:
                section = int(np.clip(round(position[0] / working.voxel_size[0] - 0.5), 0, working.shape[0] - 1))
                group = sampler.patch_group(0, position[1:], radius, rng, section=section)
            groups.append(group)
            classes.append(c)
    patches = standardize_patches(torch.from_numpy(np.stack(groups).astype(np.float32)).flatten(0, 1))
    with torch.inference_mode():
        latents = encoder.encode(patches[:, None]).view(len(groups), 2, -1).numpy()
    return latents, np.array(classes)


def invariance(latents: np.ndarray) -> float:
    """Mean distance patch-copy over mean distance between the patches (all pairs)."""
    pairs = np.linalg.norm(latents[:, 0] - latents[:, 1], axis=1).mean()
    anchors = latents[:, 0]
    between = np.linalg.norm(anchors[:, None] - anchors[None], axis=-1)
    return float(pairs / (between.sum() / (len(anchors) * (len(anchors) - 1))))


def knn_agreement(latents: np.ndarray, classes: np.ndarray, k: int = 10) -> float:
    """Share of each patch's k nearest patches (latent space) of its own class."""
    anchors = latents[:, 0]
    distance = np.linalg.norm(anchors[:, None] - anchors[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1)[:, :k]
    return float((classes[nearest] == classes[:, None]).mean())


def main() -> None:
    from sklearn.manifold import TSNE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", required=True, help="figure (.png)")
    parser.add_argument("--results", help="folder for results.json (default: beside the figure)")
    parser.add_argument("--dataset", default="vnc")
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = orgaseg.load_dataset(args.dataset)
    encoder = load_encoder(args.checkpoint)
    latents, classes = pair_latents(encoder, data.evaluation[0], args.per_class, len(data.classes), args.seed)
    semantic = encoder.semantic
    subspaces = {f"dims 1-{semantic} (semantic)": latents[..., :semantic],
                 f"dims {semantic + 1}-{2 * semantic}": latents[..., semantic: 2 * semantic]}
    colours = class_colors(len(data.classes))
    figure = new_figure(11, 5)
    summary = {}
    for panel, (title, values) in enumerate(subspaces.items()):
        flat = values.reshape(-1, values.shape[-1])
        points = TSNE(2, perplexity=30, init="pca", random_state=args.seed).fit_transform(flat).reshape(-1, 2, 2)
        axes = figure.add_subplot(1, 2, panel + 1)
        for start, end in points:
            axes.plot([start[0], end[0]], [start[1], end[1]], color="0.7", linewidth=0.5, zorder=1)
        for c, name in enumerate(data.classes):
            mine = classes == c
            if mine.any():
                axes.scatter(points[mine, 0, 0], points[mine, 0, 1], s=10, color=colours[c], label=name, zorder=2)
                axes.scatter(points[mine, 1, 0], points[mine, 1, 1], s=10, color=colours[c], marker="x", zorder=2)
        score = {"invariance_ratio": round(invariance(values), 3), "knn_class_agreement": round(knn_agreement(values, classes), 3)}
        summary[title] = score
        axes.set_title(f"{title}: copy/between distance {score['invariance_ratio']:.2f}, "
                       f"10-NN same class {score['knn_class_agreement']:.2f}", fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
        if panel == 0:
            axes.legend(fontsize=7, loc="best")
    record = encoder.record
    figure.suptitle(f"{record['method']} ({record['preset']}, {record['step']} steps) on {args.dataset}: patches (o) "
                    f"and transformed copies (x), t-SNE", fontsize=9)
    save_png(figure, args.output)
    environment = environment_record()
    result = {"dataset": args.dataset, "checkpoint": str(args.checkpoint), "method": record["method"],
              "preset": record["preset"], "steps": record["step"], "per_class": args.per_class,
              "patches": int(len(classes)), "class_counts": {n: int((classes == c).sum()) for c, n in enumerate(data.classes)},
              "subspaces": summary, "figure": str(args.output), "environment": environment,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.results) if args.results else Path(args.output).parent
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
