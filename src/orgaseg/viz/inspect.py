"""``orgaseg inspect``: what a trained masked autoencoder has learned, in two figures.

- ``reconstructions.png``: a few fields of view, masked at several ratios, and
  the model's reconstructions (MAESTER's Fig. 2).
- ``embedding.png``: a 2D embedding (UMAP when ``umap-learn`` is installed,
  else PCA) of token features sampled from the volume, coloured by k-means
  cluster and, when a reference is given, by the reference class at each
  token's centre pixel.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from orgaseg.cluster.kmeans import fit_kmeans
from orgaseg.errors import OrgasegError, OrgasegWarning, arg
from orgaseg.evaluation.classmap import (
    DATASET_CLASS_MAP,
    parse_class_map,
    reference_classes,
)
from orgaseg.io import compute_normalization
from orgaseg.io.partial import refuse_existing
from orgaseg.io.volume import Volume
from orgaseg.labels import IGNORE_LABEL
from orgaseg.pipeline.resample import resampled_volume
from orgaseg.pipeline.stages import check_native_pixel, resolve_pixel_size
from orgaseg.viz._figure import new_figure, save_png
from orgaseg.viz.colors import class_colors, label_colors

#: The figures :func:`inspect_model` writes.
FIGURES = ("reconstructions.png", "embedding.png")


def inspect_model(
    checkpoint: str | Path,
    volume: Volume,
    output_dir: str | Path,
    *,
    reference: Volume | None = None,
    class_names: Sequence[str] | None = None,
    class_map=None,
    mask_ratios: Sequence[float] = (0.25, 0.5, 0.75),
    n_fovs: int = 4,
    n_tokens: int = 5_000,
    k: int = 6,
    seed: int = 0,
    device: str = "cpu",
    pixel_size: float | str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the reconstruction and embedding figures of a checkpoint on a volume.

    Parameters
    ----------
    checkpoint : path
        A MAESTER-family checkpoint.
    volume : Volume
        Where fields of view are drawn (xy planes), at the working pixel size.
    output_dir : path
        Folder for the PNGs.
    reference : Volume, optional
        Class ids (IGNORE_LABEL not shown) to colour the embedding by.
    class_names : sequence of str, optional
        Names of the reference classes.
    class_map : ClassMap, str, path or mapping, optional
        Which reference values are which class, as for
        :func:`orgaseg.evaluation.evaluate` (values it does not name are not
        shown); the classes are then its names. Without it the reference
        values must be class ids ``0 .. C-1`` (below ``len(class_names)``
        when names are given).
    mask_ratios : sequence of float
        Masking ratios of the reconstruction figure.
    n_fovs : int
        Fields of view in the reconstruction figure.
    n_tokens : int
        Tokens in the embedding.
    k : int
        Clusters of the embedding's colouring.
    seed : int
        Seed of every random choice.
    device : str
        Where the model runs.
    pixel_size : float, "native" or None
        Working pixel size in nm, as for :func:`orgaseg.segment`: None is the
        checkpoint's training pixel size, so the fields of view cover the
        width in nm the model learned from. A volume whose voxel size is
        unknown is read at its own pixels (with a warning).
    overwrite : bool
        Replace figures an earlier run left in ``output_dir``; otherwise they are an error.

    Returns
    -------
    dict of str to Path
    """
    import torch

    from orgaseg.methods.graph_method import is_graph_checkpoint
    from orgaseg.models.encoder import load_encoder

    output_dir = Path(output_dir)
    if class_map is not None:
        class_map = parse_class_map(class_map)
        if class_names is not None:
            raise OrgasegError(f"the class map names the classes: pass {arg('classes')} or {arg('class_map')}, not both")
        class_names = class_map.classes
    if not 1 <= k <= n_tokens:
        raise OrgasegError(f"K = {k}: the embedding's k-means needs 1 <= K <= the {n_tokens} tokens it draws")
    refuse_existing(*(output_dir / name for name in FIGURES), overwrite=overwrite)  # before the model runs
    what = "inspect draws a ViT's masked reconstructions of its fields of view (maester, his4mae, sdae-recon)"
    if is_graph_checkpoint(checkpoint):
        raise OrgasegError(f"{checkpoint} is a trained graph clusterer (sccs, cs2c), which has none: {what}")
    encoder = load_encoder(checkpoint, device)
    if not (hasattr(encoder.model, "reconstruct") and hasattr(encoder, "fov")):
        raise OrgasegError(f"{checkpoint}: {what}; its {encoder.name} encoder has none")
    model, fov, patch = encoder.model, encoder.fov, encoder.patch
    working = _working_volume(volume, resolve_pixel_size(pixel_size, encoder.pixel_size_nm), encoder, checkpoint)
    factors = tuple(w / v for w, v in zip(working.voxel_size, volume.voxel_size))
    normalization = compute_normalization(volume, seed=seed)  # the input's, as segment and train take it
    rng = np.random.default_rng(seed)
    n_needed = max(n_fovs, -(-n_tokens // model.n_tokens))
    fovs, corners = _fields_of_view(working, normalization, fov, n_needed, rng)
    if reference is not None:  # every token's class, read and checked before the model runs
        values = np.stack([_token_values(reference, corner, fov, patch, factors) for corner in corners]).ravel()
        token_classes = reference_classes(values, class_map=class_map)
        if class_map is None:
            _check_class_ids(token_classes, class_names, getattr(reference, "path", None) or "the reference")
    output_dir.mkdir(parents=True, exist_ok=True)
    batch = torch.from_numpy(fovs)[:, None]
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        recon = [model.reconstruct(batch[:n_fovs], ratio, generator) for ratio in mask_ratios]
        tokens = torch.cat([model.encode(batch[i : i + 64]) for i in range(0, len(batch), 64)]).float().numpy()
    paths = {"reconstructions": _plot_reconstructions(fovs[:n_fovs], recon, mask_ratios, output_dir / FIGURES[0])}

    features = tokens.reshape(-1, tokens.shape[-1])
    take = rng.choice(len(features), size=min(n_tokens, len(features)), replace=False)
    features = features[take]
    clusters = fit_kmeans(features, k, seed=seed).predict(features)
    classes = None if reference is None else token_classes[take]
    paths["embedding"] = _plot_embedding(_embed_2d(features, seed), clusters, classes, class_names,
                                         output_dir / FIGURES[1])
    return paths


def _working_volume(volume: Volume, pixel_size_nm: float | None, encoder, checkpoint) -> Volume:
    """``volume`` at the working pixel size, as ``segment`` reads it (a voxel size that is a guess is not resampled)."""
    if pixel_size_nm is None:
        check_native_pixel(encoder, checkpoint, volume, stacklevel=3)
        return volume
    if volume.attrs.get("voxel_size_assumed"):
        warnings.warn(OrgasegWarning(
            f"the volume's voxel size is unknown: its fields of view are drawn at its own pixels, not at "
            f"{pixel_size_nm:g} nm, and may cover another width than {checkpoint} learned from; pass "
            f"{arg('voxel_size')}"), stacklevel=3)
        return volume
    return resampled_volume(volume, pixel_size_nm)


def _token_values(reference: Volume, corner, fov: int, patch: int, factors=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The reference value at each token centre of the field of view at ``corner`` (working pixels), ``(fov //
    patch,) * 2``: the input voxel nearest the centre, one read per field of view (a centre beyond the volume's
    edge, where the field of view was padded, takes the edge's). ``factors``: working over input voxel size."""
    centres = patch * np.arange(fov // patch) + patch // 2
    # working pixel j lies at input coordinate (j + 1/2) r - 1/2 (orgaseg.pipeline.resample); nearest voxel
    z, ys, xs = (np.minimum(np.floor((np.asarray(c + offset) + 0.5) * r).astype(np.int64), n - 1)
                 for c, offset, r, n in zip(corner, (0, centres, centres), factors, reference.shape))
    window = reference.read((slice(int(z), int(z) + 1), slice(int(ys[0]), int(ys[-1]) + 1),
                             slice(int(xs[0]), int(xs[-1]) + 1)))[0]
    return window[np.ix_(ys - ys[0], xs - xs[0])]


def _check_class_ids(classes: np.ndarray, class_names: Sequence[str] | None, name: str) -> None:
    """Refuse reference values that are not class ids: grey levels or a 0/255 mask need a class map."""
    found = np.unique(classes[classes != IGNORE_LABEL])
    if not found.size:
        return
    limit = len(class_names) if class_names is not None else int(found.max()) + 1
    if found.max() < limit and (class_names is not None or found.size == limit):
        return
    shown = ", ".join(map(str, found[:8])) + (", ..." if found.size > 8 else "")
    raise OrgasegError(f"{name}: the reference values at the drawn tokens ({shown}) are not class ids 0..C-1"
                       f"{'' if class_names is None else f' of the {len(class_names)} names given'}; give a class map "
                       f"as for evaluate ({arg('class_map')}: 255=intracellular,0..128=membrane,...), or a dataset's "
                       f"({DATASET_CLASS_MAP})")


def _fields_of_view(volume: Volume, normalization, fov: int, n: int, rng: np.random.Generator):
    """``n`` normalised xy fields of view (reflect-padded if the plane is small) and their corners."""
    z, y, x = volume.shape
    out = np.empty((n, fov, fov), dtype=np.float32)
    corners = np.empty((n, 3), dtype=np.int64)
    for i in range(n):
        corner = (int(rng.integers(z)), int(rng.integers(max(1, y - fov + 1))), int(rng.integers(max(1, x - fov + 1))))
        region = (slice(corner[0], corner[0] + 1), slice(corner[1], corner[1] + fov), slice(corner[2], corner[2] + fov))
        plane = normalization.apply(volume.read(region))[0]
        pad = ((0, fov - plane.shape[0]), (0, fov - plane.shape[1]))
        out[i] = np.pad(plane, pad, mode="reflect") if any(p[1] for p in pad) else plane
        corners[i] = corner
    return out, corners


def _embed_2d(features: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap  # optional

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features)
    except ImportError:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(features)


def _plot_reconstructions(fovs: np.ndarray, recon: list, ratios: Sequence[float], path: Path) -> Path:
    columns = 1 + 2 * len(ratios)
    figure = new_figure(1.6 * columns, 1.7 * len(fovs))
    axes = figure.subplots(len(fovs), columns, squeeze=False)
    for row, image in enumerate(fovs):
        panels = [("input", image)]
        for ratio, (rec, mask) in zip(ratios, recon):
            masked = np.where(mask[row, 0].numpy() > 0, np.nan, image)
            panels += [(f"mask {ratio:.0%}", masked), ("reconstruction", rec[row, 0].numpy())]
        for ax, (title, panel) in zip(axes[row], panels):
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=8)
    return save_png(figure, path)


def _plot_embedding(points: np.ndarray, clusters: np.ndarray, classes, class_names, path: Path) -> Path:
    from matplotlib.patches import Patch

    panels = 1 if classes is None else 2
    figure = new_figure(5.5 * panels, 5)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    colors = label_colors(int(clusters.max()) + 1)
    axes[0].scatter(points[:, 0], points[:, 1], s=2, c=colors[clusters])
    axes[0].set_title("tokens coloured by k-means cluster")
    if classes is not None:
        shown = classes != IGNORE_LABEL
        n_classes = int(classes[shown].max()) + 1 if shown.any() else 1
        colours = class_colors(n_classes)
        axes[1].scatter(points[shown, 0], points[shown, 1], s=2, c=colours[classes[shown]])
        axes[1].set_title("tokens coloured by reference class")
        names = list(class_names) if class_names is not None else [f"class {c}" for c in range(n_classes)]
        axes[1].legend(handles=[Patch(color=colours[c], label=names[c]) for c in range(n_classes)],
                       fontsize=8, loc="best")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_png(figure, path)
