"""``orgaseg demo``: the whole job on a synthetic cell, on any machine, with no data.

Draws a phantom EM cell with exact ground truth, segments it with the best
method that finishes in about three minutes on two CPU cores (for now the
classical baseline), scores it, and writes the label OME-Zarr, the report and
overlay figures, and a few clicks per class to try ``orgaseg name`` with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orgaseg.datasets import load_dataset
from orgaseg.errors import OrgasegError, arg
from orgaseg.evaluation import evaluate
from orgaseg.io import open_volume, write_labels, write_tiff_image
from orgaseg.io.partial import refuse_existing, write_atomic
from orgaseg.progress import ProgressCallback
from orgaseg.segmentation import segment
from orgaseg.viz import overlay_figure

#: The demo's method and K: the phantom has five classes inside the cell.
DEMO_METHOD = "baseline"
DEMO_K = 6

#: Clicks the demo draws on each class of the phantom's reference, for a first try of ``orgaseg name``.
DEMO_CLICKS = 5

#: The files a demo writes before its report, which a second demo in the same folder would replace.
DEMO_FILES = ("phantom_raw.tif", "phantom_reference.tif", "clicks.csv", "segmentation.ome.zarr")


def write_demo_clicks(path: Path, reference: np.ndarray, classes, *, per_class: int = DEMO_CLICKS, seed: int = 0,
                      overwrite: bool = False) -> Path:
    """Write ``per_class`` voxels drawn at random from each class of ``reference`` (class ids) as a points CSV
    ``z,y,x,name``, the file ``orgaseg name --points`` reads, as if a user had clicked them."""
    refuse_existing(path, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    rows = ["z,y,x,name"]
    for value, name in enumerate(classes):
        voxels = np.argwhere(reference == value)
        for z, y, x in voxels[rng.choice(len(voxels), min(per_class, len(voxels)), replace=False)]:
            rows.append(f"{z},{y},{x},{name}")
    write_atomic(path, "\n".join(rows) + "\n")
    return path


def run_demo(
    output_dir: str | Path = "orgaseg-demo",
    *,
    shape: tuple[int, int, int] = (64, 256, 256),
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Path]:
    """Segment and score a phantom cell; return the paths written.

    Parameters
    ----------
    output_dir : str or Path
        Folder for the outputs (created).
    shape : tuple of int
        Phantom shape ``(z, y, x)``.
    seed : int
        Seed of the phantom and of the segmentation.
    overwrite : bool
        Replace the outputs of an earlier demo in ``output_dir``.
    progress : callable, optional
        Progress callback.

    Returns
    -------
    dict of str to Path
    """
    output_dir = Path(output_dir)
    labels_path = output_dir / "segmentation.ome.zarr"
    # refused before the phantom is drawn, also where a demo stopped (Ctrl-C) before it segmented left its phantom
    earlier = [name for name in DEMO_FILES if (output_dir / name).exists()]
    if earlier and not overwrite:
        stopped = "" if labels_path.exists() else ", of a demo stopped before it segmented"
        raise OrgasegError(f"{output_dir} holds an earlier demo's outputs ({', '.join(earlier)}{stopped}); pass "
                           f"{arg('overwrite')} to replace them")
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_dataset("phantom", shape=shape, seed=seed)
    item = data.evaluation[0]
    paths = {
        "raw": write_tiff_image(output_dir / "phantom_raw.tif", item.raw.read(), voxel_size=item.raw.voxel_size,
                                overwrite=overwrite),
        "reference": write_labels(output_dir / "phantom_reference.tif", item.reference.read(),
                                  voxel_size=item.reference.voxel_size, overwrite=overwrite,
                                  provenance={"what": "phantom reference classes (255 = outside the cell, ignored)",
                                              "classes": list(data.classes), "seed": seed},
                                  label_names=list(data.classes)),
    }
    paths["clicks"] = write_demo_clicks(output_dir / "clicks.csv", item.reference.read(), data.classes, seed=seed,
                                        overwrite=overwrite)
    # from the file just written, so the provenance names it (name --refine reads the volume again)
    result = segment(paths["raw"], method=DEMO_METHOD, k=DEMO_K, output=labels_path, seed=seed,
                     overwrite=overwrite, progress=progress)
    paths["segmentation"] = result.path
    labels = open_volume(result.path)
    report = evaluate(labels, item.reference, classes=data.classes, background=data.background, progress=progress)
    paths.update({f"report {name}": path for name, path in report.save(output_dir / "report", overwrite=True).items()})
    z = item.raw.shape[0] // 2
    region = (slice(z, z + 1), slice(None), slice(None))
    mapping = {int(c): name for c, name in report.to_dict()["merge"]["mapping"].items()}
    paths["overlay"] = overlay_figure(item.raw.read(region)[0], labels.read(region)[0], item.reference.read(region)[0],
                                      path=output_dir / "overlay.png", class_names=list(data.classes),
                                      mapping=mapping, title=f"{DEMO_METHOD}, K = {DEMO_K}, phantom z = {z}")
    return paths
