"""The naming widget: click on a few voxels of each organelle, get named labels (``orgaseg name``).

Clicks live in a points layer whose ``name`` feature says which organelle each point
marks: type a name, click on that organelle a few times, type the next name, and so
on. "Name clusters" hands the points to :func:`orgaseg.organelles.name_clusters`
(majority vote per cluster; with "refine", a classifier trained on the clicked voxels'
features relabels every voxel) and adds the named labels as a layer.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, PushButton, create_widget

from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume
from orgaseg.napari.layers import (file_of, labels_layer, layer_units, layer_volume, origin_of, to_voxels,
                                   voxel_size_of)
from orgaseg.napari.tasks import TaskRunner, text_label

#: The points layer's feature holding each click's organelle name.
NAME_FEATURE = "name"


class NamingWidget(Container):
    """Name the clusters of a labels layer from clicks in a points layer.

    Fields: the clusters (a layer from the segment widget or from an ``orgaseg segment``
    output), the points layer of clicks, the organelle name given to the next clicks,
    and optionally "refine" with the image that was segmented and the classifier.
    """

    def __init__(self, napari_viewer) -> None:
        from napari.layers import Image, Labels, Points

        from orgaseg.organelles.refine import CLASSIFIERS

        self.viewer = napari_viewer
        self.clusters = create_widget(annotation=Labels, label="clusters")
        self.points = create_widget(annotation=Points, label="clicks")
        self.new_points = PushButton(text="New clicks layer")
        self.organelle = LineEdit(label="organelle", value="mitochondria",
                             tooltip="the name the next clicks get (changing it does not rename earlier clicks)")
        self.refine = CheckBox(text="refine with a classifier on the features", value=False)
        self.image = create_widget(annotation=Image, label="image (refine)", options={"nullable": True})
        self.classifier = ComboBox(label="classifier", choices=list(CLASSIFIERS), value=CLASSIFIERS[0])
        self.z_context = CheckBox(text="also read the slices above and below", value=False)
        self.run_button = PushButton(text="Name clusters")
        self.cancel_button = PushButton(text="Cancel")
        self.status = text_label()
        self.summary = text_label()
        super().__init__(widgets=[self.clusters, self.points, self.new_points, self.organelle, self.refine, self.image,
                                  self.classifier, self.z_context, self.run_button, self.cancel_button, self.status, self.summary])
        self.tasks = TaskRunner(napari_viewer, self.status, self.run_button, self.cancel_button)
        self.new_points.changed.connect(self.add_points_layer)
        self.organelle.changed.connect(self._name_changed)
        self.run_button.changed.connect(self.run)

    def add_points_layer(self):
        """A points layer for clicks on the chosen clusters (same scale and translation), in add mode, selected.

        Its data coordinates are then the clusters' voxels, also in the CSV napari saves from it.
        """
        import pandas as pd

        labels = self.clusters.value
        scale = labels.scale[-3:] if labels is not None else (1.0, 1.0, 1.0)
        units = labels.units[-3:] if labels is not None else None
        translate = origin_of(labels) if labels is not None else (0.0, 0.0, 0.0)
        layer = self.viewer.add_points(np.empty((0, 3)), ndim=3, name="clicks", scale=scale, units=units,
                                       translate=translate,
                                       size=4 * min(scale),
                                       features=pd.DataFrame({NAME_FEATURE: pd.Series([], dtype=object)}),
                                       face_color="white", border_color="black")
        layer.feature_defaults = {NAME_FEATURE: self.organelle.value}
        layer.mode = "add"
        self.reset_choices()
        self.points.value = layer
        return layer

    def _name_changed(self, value: str) -> None:
        layer = self.points.value
        if layer is not None and NAME_FEATURE in layer.features:
            layer.feature_defaults = {NAME_FEATURE: value}

    def annotations(self):
        """The clicks as :class:`orgaseg.organelles.Annotations` on the clusters' voxel grid."""
        from orgaseg.organelles import points_from_arrays

        labels, points = self.clusters.value, self.points.value
        if labels is None or points is None:
            raise OrgasegError("choose the clusters layer and the clicks layer (New clicks layer makes one)")
        if len(points.data) == 0:
            raise OrgasegError(f"{points.name!r} has no points: click on a few voxels of each organelle")
        if NAME_FEATURE not in points.features:
            raise OrgasegError(f"{points.name!r} has no {NAME_FEATURE!r} feature: make the layer with New clicks layer")
        return points_from_arrays(to_voxels(points, labels), list(points.features[NAME_FEATURE]),
                                  shape=layer_volume(labels).shape, source=f"napari layer {points.name!r}")

    def segmentation(self):
        """What :func:`~orgaseg.organelles.name_clusters` names: the file the layer was read from (unless edited
        since), or the layer."""
        from orgaseg.segmentation import Segmentation

        layer = self.clusters.value
        record = layer.metadata.get("orgaseg") or {}
        path = file_of(layer)
        if path:
            return path
        if "k" not in record or "clusterer" not in record:
            raise OrgasegError(f"{layer.name!r} is not an orgaseg segmentation (no provenance with K and the "
                               "clusterer): segment with the Segment widget or open an 'orgaseg segment' output")
        return Segmentation(labels=np.asarray(layer_volume(layer)), path=None, model=None, provenance=record)

    def run(self) -> None:
        """Name the clusters in a thread; the named labels are added as a layer."""
        from orgaseg.organelles import name_clusters

        try:
            arguments = dict(segmentation=self.segmentation(), annotations=self.annotations(),
                             refine=bool(self.refine.value))
            if self.refine.value:  # the classifier's settings mean nothing without it (and are refused)
                arguments.update(classifier=self.classifier.value, z_context=bool(self.z_context.value))
            if self.refine.value and self.image.value is not None:
                image = self.image.value
                arguments["raw"] = Volume(layer_volume(image), voxel_size=voxel_size_of(image),
                                          path=f"<napari layer {image.name}>", origin=origin_of(image))
        except OrgasegError as err:
            self.tasks.show(f"failed: {err}")
            return
        clusters = self.clusters.value

        def done(named) -> None:
            from napari.layers import Layer

            names = dict(enumerate(named.names))
            self.viewer.add_layer(Layer.create(*labels_layer(
                named.labels, kind="named", voxel_size=voxel_size_of(clusters), origin=origin_of(clusters),
                name=f"{clusters.name} named", names=names, record=named.provenance, units=layer_units(clusters))))
            self.summary.value = named.naming.summary(refined=named.classifier is not None)
            self.tasks.show(f"done: {len(named.names) - 1} names")

        self.tasks.start(lambda progress: name_clusters(**arguments, progress=progress), done, "naming clusters")
