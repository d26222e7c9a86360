"""The morphometrics widget: measure an instance layer, browse the table, see the selected instance.

"Measure" runs :func:`orgaseg.organelles.measure_instances` (volume, surface area,
sphericity, centroid, axes, intensity with an image; area, perimeter and circularity for a
single image) in a thread; the table shows one
row per instance and the per-class summary below it. Selecting a row shows that
instance alone in the labels layer and centres the view on its centroid. "Save table"
writes the table as ``.csv`` (or ``.parquet``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton, Table, create_widget

from orgaseg.errors import OrgasegError
from orgaseg.io import write_labels
from orgaseg.io.volume import Volume
from orgaseg.napari.layers import (
    file_of,
    layer_volume,
    names_of,
    origin_of,
    stated_voxel_size,
    voxel_size_of,
)
from orgaseg.napari.tasks import TaskRunner, text_label

#: How to give a layer measured from napari its voxel size.
MEASURE_REMEDY = ("measuring it would take 1 nm voxels. Open the instances with orgaseg's reader (napari --plugin "
                  "orgaseg FILE), which reads the voxel size from the file, or set the layer's scale to it in nm "
                  "(viewer.layers[NAME].scale = (z, y, x) in napari's console)")


class MeasureWidget(Container):
    """Morphometrics of an instance labels layer, with the selected row's instance highlighted."""

    def __init__(self, napari_viewer) -> None:
        from napari.layers import Image, Labels

        self.viewer = napari_viewer
        self.instances = create_widget(annotation=Labels, label="instances")
        self.image = create_widget(annotation=Image, label="intensities", options={"nullable": True})
        self.run_button = PushButton(text="Measure")
        self.cancel_button = PushButton(text="Cancel")
        self.status = text_label()
        self.table = Table()
        self.summary = Table()
        self.output = FileEdit(label="table file", mode="w", filter="*.csv *.parquet")
        self.save_button = PushButton(text="Save table")
        super().__init__(widgets=[self.instances, self.image, self.run_button, self.cancel_button, self.status,
                                  self.table, self.summary, self.output, self.save_button])
        self.tasks = TaskRunner(napari_viewer, self.status, self.run_button, self.cancel_button)
        self.morphometrics = None
        self._layer = None
        self.run_button.changed.connect(self.run)
        self.save_button.changed.connect(lambda: self.save(self.output.value))
        self.table.native.itemSelectionChanged.connect(self._selection_changed)

    def run(self) -> None:
        """Measure the chosen instance layer in a thread; fills the tables when done."""
        from orgaseg.organelles import measure_instances

        layer = self.instances.value
        if layer is None:
            self.tasks.show("failed: choose an instance labels layer")
            return
        path = file_of(layer)
        image = self.image.value
        try:  # a layer not read from a file (or painted since) is measured at its scale, which must say nm
            voxel_size = None if path else stated_voxel_size(layer, MEASURE_REMEDY)
        except OrgasegError as err:
            self.tasks.show(f"failed: {err}")
            return
        raw = None if image is None else Volume(layer_volume(image), voxel_size=voxel_size_of(image),
                                                origin=origin_of(image))

        def call(progress):
            if path:  # read from a file and not edited since: measured from it, blockwise, with its classes
                return measure_instances(path, raw=raw, progress=progress)
            names = names_of(layer)
            if not names:
                return measure_instances(Volume(layer_volume(layer), voxel_size=voxel_size,
                                                origin=origin_of(layer)), raw=raw, progress=progress)
            # a layer made here: written with its classes first, so the table and the per-class summary
            # come from the same road as 'orgaseg measure' on a file
            with tempfile.TemporaryDirectory() as folder:
                labels = np.asarray(layer_volume(layer))
                n_labels = max(max(names), int(labels.max())) + 1
                written = write_labels(Path(folder) / "instances.ome.zarr", labels, voxel_size=voxel_size,
                                       origin=origin_of(layer), provenance={"layer": layer.name},
                                       label_names=[names.get(v, "") for v in range(n_labels)])
                return measure_instances(written, raw=raw, progress=progress)

        def done(morphometrics) -> None:
            self.show(morphometrics, layer)
            self.tasks.show(f"done: {len(morphometrics.table['id'])} instances")

        self.tasks.start(call, done, f"measuring {layer.name}")

    def show(self, morphometrics, layer) -> None:
        """Fill the tables with ``morphometrics`` of ``layer``."""
        if self._layer is not None:  # the layer measured before shows all its instances again
            self._layer.show_selected_label = False
        self.morphometrics, self._layer = morphometrics, layer
        self.table.value = {name: _cells(values) for name, values in morphometrics.table.items()}
        self.summary.value = {name: _cells(values) for name, values in morphometrics.summary.items()}

    def select(self, instance_id: int) -> None:
        """Show instance ``instance_id`` alone and centre the view on its centroid."""
        layer, table = self._layer, self.morphometrics.table
        row = int(np.flatnonzero(table["id"] == instance_id)[0])
        layer.selected_label = int(instance_id)
        layer.show_selected_label = True
        # the table's centroids are world positions already: in nm, with the volume's origin added (napari's
        # world, for a layer whose scale is the voxel size and whose translation is that origin)
        # (a single image's table has no z: its one section is where the view is)
        centre = np.array([float(table[f"centroid_{axis}_nm"][row]) for axis in "zyx" if f"centroid_{axis}_nm" in table])
        self.viewer.dims.set_point(range(self.viewer.dims.ndim - len(centre), self.viewer.dims.ndim), centre)
        viewer_camera(self.viewer).center = tuple(centre)
        self.tasks.show(f"instance {instance_id}" + (f" ({table['class'][row]})" if table["class"][row] else ""))

    def save(self, path) -> Path | None:
        """Write the instance table to ``path`` (``.csv`` or ``.parquet``)."""
        from orgaseg.organelles import write_table

        try:
            if self.morphometrics is None:
                raise OrgasegError("nothing to save yet: press Measure first")
            if path is None or str(path) in ("", "."):
                raise OrgasegError("choose a table file (.csv or .parquet)")
            written = write_table(self.morphometrics.table, path)
        except OrgasegError as err:
            self.tasks.show(f"failed: {err}")
            return None
        self.tasks.show(f"saved {written}")
        return written

    def _selection_changed(self) -> None:
        rows = sorted({index.row() for index in self.table.native.selectedIndexes()})
        if rows and self.morphometrics is not None:
            self.select(int(self.morphometrics.table["id"][rows[0]]))
        elif self._layer is not None:
            self._layer.show_selected_label = False


def _cells(values) -> list:
    """A column for the table: floats rounded for reading, the rest as they are."""
    return [round(v, 4) if isinstance(v, float) else v for v in np.asarray(values, dtype=object).tolist()]


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9 on (``viewer.camera`` is deprecated there)."""
    return getattr(viewer, "scene", viewer).camera
