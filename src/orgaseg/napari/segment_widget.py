"""The segment widget: ``orgaseg.segment`` on an image layer, in a thread, with progress and cancel."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton, SpinBox, create_widget

from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume
from orgaseg.napari.layers import labels_layer, layer_volume, origin_of, stated_voxel_size, voxel_size_of
from orgaseg.napari.tasks import TaskRunner, text_label


class SegmentWidget(Container):
    """Segment an image layer with any orgaseg method; the clusters come back as a labels layer.

    Fields: the image layer, the method (a row of ``orgaseg methods``), K, the model
    checkpoint (learned methods: an encoder's ``.pt``, or a trained sccs or cs2c
    ``.json``, which labels with its own K), the voxel size in nm (empty: the layer's scale, refused
    when it is napari's default 1 x 1 x 1, which says nothing; typed, it becomes the image layer's scale
    when the clusters come back, so that they lie over the image), the
    working pixel size (empty: the method's default; ``native`` or a number of nm) and
    stage options (``NAME=VALUE`` separated by spaces, e.g. ``keep=8 planes=xy,xz,yz``).
    """

    def __init__(self, napari_viewer) -> None:
        from napari.layers import Image

        from orgaseg.methods import METHODS

        self.viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="image")
        self.method = ComboBox(label="method", choices=list(METHODS), value="baseline")
        self.k = SpinBox(label="K", value=8, min=1, max=1000)
        self.model = FileEdit(label="model", mode="r", filter="*.pt *.json", nullable=True)
        self.voxel_size = LineEdit(label="voxel size (nm)", tooltip="z y x in nm; empty: the layer's scale "
                                   "(unless napari's default 1 1 1)")
        self.pixel_size = LineEdit(label="pixel size (nm)", tooltip="working pixel size: empty for the method's "
                                   "default, 'native', or a number of nm")
        self.stage_options = LineEdit(label="options", tooltip="stage options NAME=VALUE separated by spaces, "
                                "e.g. keep=8 planes=xy,xz,yz")
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel")
        self.status = text_label()
        super().__init__(widgets=[self.image, self.method, self.k, self.model, self.voxel_size, self.pixel_size,
                                  self.stage_options, self.run_button, self.cancel_button, self.status])
        self.tasks = TaskRunner(napari_viewer, self.status, self.run_button, self.cancel_button)
        self.run_button.changed.connect(self.run)

    def arguments(self) -> dict:
        """The keyword arguments of :func:`orgaseg.segment` the fields say (checked, clear errors)."""
        from orgaseg.options import parse_assignments

        layer = self.image.value
        if layer is None:
            raise OrgasegError("choose an image layer to segment")
        typed = _numbers(self.voxel_size.value, "voxel size", 3)
        voxel_size = typed or stated_voxel_size(
            layer, "type the voxel size Z Y X in nm in 'voxel size (nm)', or open the image with orgaseg's reader "
                   "(napari --plugin orgaseg IMAGE), which reads it from the file's metadata")
        origin = origin_of(layer)
        if typed:  # the layer's place in its own units: as many voxels from zero, at the voxel size typed
            origin = tuple(o / s * v for o, s, v in zip(origin, voxel_size_of(layer), typed))
        model = self.model.value
        model = None if model is None or str(model) in ("", ".") else Path(model)
        pixel_size = self.pixel_size.value.strip() or None
        # read block by block as segment goes: a dask-backed layer larger than memory works too
        data = Volume(layer_volume(layer), voxel_size=voxel_size, path=f"<napari layer {layer.name}>",
                      origin=origin)
        from orgaseg.methods.graph_method import is_graph_checkpoint

        trained = model is not None and is_graph_checkpoint(model)  # a trained sccs/cs2c labels with its own K
        return dict(data=data, method=self.method.value,
                    k=None if trained else int(self.k.value), model=model, pixel_size=pixel_size,
                    options=parse_assignments(self.stage_options.value.split(), "options") or None)

    def run(self) -> None:
        """Start segmenting (the result is added as a labels layer when it is done)."""
        try:
            arguments = self.arguments()
        except OrgasegError as err:
            self.tasks.show(f"failed: {err}")
            return
        image = self.image.value
        image_name = image.name

        def call(progress):
            import orgaseg

            return orgaseg.segment(**arguments, progress=progress)

        def done(result) -> None:
            from napari.layers import Layer

            name = f"{image_name} {arguments['method']} K={result.provenance['k']}"
            data = arguments["data"]
            if (voxel_size_of(image), origin_of(image)) != (data.voxel_size, data.origin):
                # a voxel size was typed: the image takes it, so that the clusters lie over it
                kept = -image.ndim  # a single image keeps its two axes
                image.scale, image.translate = data.voxel_size[kept:], data.origin[kept:]
                image.units = ("nm",) * image.ndim
            self.viewer.add_layer(Layer.create(*labels_layer(
                result.labels, kind="clusters", voxel_size=data.voxel_size, origin=data.origin, name=name,
                record=result.provenance, n_labels=int(result.provenance["k"]))))
            self.tasks.show(f"done: {name}")

        self.tasks.start(call, done, f"segmenting {image_name}")


def _numbers(text: str, what: str, count: int) -> tuple[float, ...] | None:
    """``count`` numbers from ``"z y x"`` (commas allowed), one number for all, or None when empty."""
    parts = text.replace(",", " ").split()
    if not parts:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise OrgasegError(f"{what}: expected numbers, got {text!r}") from None
    if len(values) == 1:
        values *= count
    if len(values) != count or min(values) <= 0:
        raise OrgasegError(f"{what}: expected {count} positive numbers (z y x), got {text!r}")
    return tuple(values)
