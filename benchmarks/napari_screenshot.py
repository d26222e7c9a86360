"""The napari plugin on a real stack: segment, name by clicks, measure, screenshot (docs/figures/napari-vnc.png).

Every step goes through the plugin as a user drives it: the three widgets are docked from
the plugin's manifest (``add_plugin_dock_widget``), the Segment widget runs the baseline
on a few vnc slices (stack1, 50 x 4.6 x 4.6 nm), the Name clusters widget names its
clusters from clicks placed on voxels of each reference class (a user would click where
they see each organelle), the named mitochondria are split into instances
(``orgaseg.organelles.make_instances``) and the Morphometrics widget measures them and
highlights the one of median volume. The picture is ``viewer.screenshot`` of the whole window.

Needs a display with OpenGL: on a headless machine run it under a virtual one:

    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/napari_screenshot.py \
        [--data-root /work/shared/data] [--slices 0 4] [--clicks 5] [-o docs/figures/napari-vnc.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def wait(widget) -> None:
    """Run the Qt event loop until the widget's call has finished."""
    from qtpy.QtWidgets import QApplication

    while widget.tasks.busy:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()
    if not widget.status.value.startswith("done"):
        raise SystemExit(f"{type(widget).__name__}: {widget.status.value}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--slices", type=int, nargs=2, default=[0, 4], help="first and last+1 slice of stack1")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per class")
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/figures/napari-vnc.png"))
    args = parser.parse_args(argv)

    import napari

    from orgaseg.datasets import load_dataset
    from orgaseg.napari.layers import labels_layer
    from orgaseg.napari.measure_widget import viewer_camera
    from orgaseg.napari.naming_widget import NAME_FEATURE
    from orgaseg.napari.writer import write_named_labels
    from orgaseg.organelles import make_instances

    dataset = load_dataset("vnc", data_root=args.data_root)
    item = dataset.evaluation[0]
    region = (slice(*args.slices), slice(None), slice(None))
    raw, reference = item.raw.read(region), item.reference.read(region)

    viewer = napari.Viewer(title="orgaseg on vnc stack1", show=True)
    viewer.window._qt_window.resize(1900, 1150)
    image = viewer.add_image(raw, scale=item.raw.voxel_size, units=("nm", "nm", "nm"), name="vnc stack1")
    _, segment = viewer.window.add_plugin_dock_widget("orgaseg", "Segment")
    _, naming = viewer.window.add_plugin_dock_widget("orgaseg", "Name clusters")
    _, measure = viewer.window.add_plugin_dock_widget("orgaseg", "Morphometrics")

    segment.image.value = image
    segment.method.value, segment.k.value = "baseline", args.k
    segment.run()
    wait(segment)
    clusters = viewer.layers[-1]

    naming.clusters.value = clusters
    points = naming.add_points_layer()
    rng = np.random.default_rng(0)
    for class_id, name in enumerate(dataset.classes):
        naming.organelle.value = name
        voxels = np.argwhere(reference == class_id)
        points.add(voxels[rng.choice(len(voxels), args.clicks, replace=False)])
    assert list(points.features[NAME_FEATURE]).count("mitochondria") == args.clicks
    naming.run()
    wait(naming)
    named = viewer.layers[-1]

    with tempfile.TemporaryDirectory() as folder:  # saved with the plugin's writer, as File > Save would
        path = Path(folder) / "named.ome.zarr"
        write_named_labels(str(path), named.data, named.as_layer_data_tuple()[1])
        instances = make_instances(path, classes=["mitochondria"], min_size_nm3=0.002e9)
    viewer.add_layer(napari.layers.Layer.create(*labels_layer(
        instances.labels, kind="instances", voxel_size=item.raw.voxel_size, name="mitochondria instances",
        names={i: c for i, c in enumerate(instances.classes, 1)}, record=instances.provenance)))
    instance_layer = viewer.layers[-1]

    measure.instances.value = instance_layer
    measure.image.value = image
    measure.run()
    wait(measure)
    volumes = measure.morphometrics.table["volume_um3"]
    median = int(np.argsort(volumes)[len(volumes) // 2])  # a typical one: the row of median volume
    measure.table.native.selectRow(median)
    chosen = int(measure.morphometrics.table["id"][median])
    clusters.visible = False
    named.opacity = 0.3
    instance_layer.opacity = 0.9
    viewer_camera(viewer).zoom *= 3  # around the selected instance, which the widget centred
    viewer.layers.selection.active = instance_layer
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False)
    print(f"{args.output}: {len(instances.classes)} mitochondria measured; id {chosen} (median volume, "
          f"{volumes[median]:.4f} um^3) highlighted; "
          f"naming: {naming.summary.value}")
    viewer.close()


if __name__ == "__main__":
    main()
