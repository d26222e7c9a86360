"""The napari plugin, headless: reader, writer and the three widgets end to end on a tiny phantom.

Skipped when napari (the ``orgaseg[napari]`` extra, part of the README's test command) is not
installed, or when Qt cannot start (tried in a child process first). Without a display Qt
runs offscreen, where there is no OpenGL: the tests that show an image layer then skip;
run them under a virtual display (``xvfb-run -a python -m pytest tests/test_napari.py``).
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def _qt_failure() -> str | None:
    """Why a Qt application cannot start here (None if it can), asked of a child process.

    A Qt that cannot load its platform plugin aborts the process, which would end the whole test session.
    """
    done = subprocess.run([sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


_QT_FAILURE = _qt_failure()
if _QT_FAILURE is not None:
    pytest.skip(f"Qt cannot start here: {_QT_FAILURE}", allow_module_level=True)

import orgaseg  # noqa: E402
from orgaseg.errors import OrgasegError  # noqa: E402
from orgaseg.napari.layers import names_of  # noqa: E402
from orgaseg.napari.measure_widget import MeasureWidget, viewer_camera  # noqa: E402
from orgaseg.napari.naming_widget import NAME_FEATURE, NamingWidget  # noqa: E402
from orgaseg.napari.reader import napari_get_reader  # noqa: E402
from orgaseg.napari.segment_widget import SegmentWidget  # noqa: E402
from orgaseg.napari.writer import write_named_labels  # noqa: E402
from orgaseg.synthetic import CLASS_NAMES, make_cell  # noqa: E402
from orgaseg.viz.colors import label_colors  # noqa: E402

VOXEL = (20.0, 20.0, 20.0)
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def cell():
    return make_cell((8, 48, 48), voxel_size=VOXEL, seed=0)


@pytest.fixture(scope="module")
def segmented(cell, tmp_path_factory):
    path = tmp_path_factory.mktemp("napari") / "seg.ome.zarr"
    orgaseg.segment(cell.raw, voxel_size=VOXEL, k=4, sample_size=3000, output=path)
    return path, np.asarray(orgaseg.open_volume(path).read())


def _clicks(cell, per_class=3, seed=0):
    """A few (z, y, x) voxels of each of three phantom classes, with their names."""
    rng = np.random.default_rng(seed)
    coords, names = [], []
    for class_id in (1, 2, 5):  # cytoplasm, nucleus, membrane
        voxels = np.argwhere(cell.labels == class_id)
        for row in rng.choice(len(voxels), per_class, replace=False):
            coords.append(voxels[row])
            names.append(CLASS_NAMES[class_id])
    return np.array(coords), names


@pytest.fixture
def gl(qapp):
    """Skip unless OpenGL works here (napari draws image layers with it)."""
    from napari._vispy.utils.gl import get_gl_extensions

    try:
        get_gl_extensions()
    except Exception as err:  # offscreen Qt has no OpenGL context
        pytest.skip(f"no OpenGL context ({type(err).__name__}); run under xvfb-run to test image layers")


def _finish(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.tasks.busy, timeout=WAIT_MS)


def test_reader_opens_a_segmentation_with_its_colours_scale_and_provenance(segmented, make_napari_viewer):
    path, labels = segmented
    assert napari_get_reader(str(path)) is not None
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="orgaseg")
    assert isinstance(layer, napari.layers.Labels)
    np.testing.assert_array_equal(np.asarray(layer.data), labels)
    assert tuple(layer.scale) == VOXEL
    assert layer.metadata["kind"] == "clusters" and layer.metadata["orgaseg"]["k"] == 4
    # cluster 0 is a cluster: drawn in the palette's first colour, not transparent like napari's background
    np.testing.assert_allclose(layer.colormap.map(np.array([0, 3]))[:, :3], label_colors(4)[[0, 3], :3], atol=0.01)
    assert layer.colormap.map(np.array([0]))[0, 3] == 1.0
    assert names_of(layer) == {i: f"cluster {i}" for i in range(4)}



def test_reader_opens_a_pyramid_as_a_multiscale_layer(tmp_path, make_napari_viewer):
    from orgaseg.io.writers import write_labels

    labels = np.random.default_rng(0).integers(0, 3, (2, 600, 600)).astype(np.uint8)
    path = write_labels(tmp_path / "seg.ome.zarr", labels, voxel_size=(10, 5, 5), provenance={"command": "segment", "k": 3})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="orgaseg")
    assert layer.multiscale and [level.shape for level in layer.data] == [
        orgaseg.open_volume(path, level=i).shape for i in range(len(layer.data))]
    assert len(layer.data) >= 3 and tuple(layer.scale) == (10, 5, 5)
    np.testing.assert_array_equal(np.asarray(layer.data[0]), labels)
    # saved again, it keeps its full resolution (numpy reads napari's MultiScaleData as its coarsest level)
    (saved,) = layer.save(str(tmp_path / "saved.ome.zarr"), plugin="orgaseg")
    back = orgaseg.open_volume(saved)
    assert back.voxel_size == (10, 5, 5)
    np.testing.assert_array_equal(np.asarray(back.read()), labels)

def test_reader_leaves_what_it_cannot_read_to_other_readers(tmp_path):
    import tifffile

    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    series = tmp_path / "series.tif"
    tifffile.imwrite(series, np.zeros((3, 2, 8, 8), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    (tmp_path / "notes.zarr").mkdir()
    for path in (rgb, series, tmp_path / "notes.zarr", tmp_path / "image.png"):
        assert napari_get_reader(str(path)) is None, path


def _image_layer(path):
    """The layer orgaseg's reader makes of ``path`` (without a viewer: napari draws images with OpenGL)."""
    reader = napari_get_reader(str(path))
    assert reader is not None, f"orgaseg's reader refuses {path}"
    (layer_data,) = reader(str(path))
    return napari.layers.Layer.create(*layer_data)


def test_reader_opens_an_image_at_its_voxel_size_and_place(tmp_path):
    import dask.array as da
    import tifffile

    from orgaseg.io import open_volume
    from orgaseg.io.crop import crop_volume, parse_region

    raw = np.arange(4 * 12 * 10, dtype=np.uint8).reshape(4, 12, 10)
    tiff = tmp_path / "raw.tif"
    tifffile.imwrite(tiff, raw, imagej=True, resolution=(1 / 8, 1 / 8),  # Fiji's calibration: 30 x 8 x 8 nm
                     metadata={"spacing": 30, "unit": "nm", "axes": "ZYX"})
    layer = _image_layer(tiff)
    assert isinstance(layer, napari.layers.Image) and layer.name == "raw"
    assert tuple(layer.scale) == (30, 8, 8) and tuple(layer.translate) == (0, 0, 0)  # napari's own reader: 1, 1, 1
    assert isinstance(layer.data, da.Array)  # read where napari looks, not whole
    np.testing.assert_array_equal(np.asarray(layer.data), raw)
    # a crop (provenance record and all) is an image too, placed where it lies in the raw volume
    crop = crop_volume(open_volume(tiff), parse_region(["1:3", "2:6", "4:"], raw.shape), tmp_path / "crop.ome.zarr")
    layer = _image_layer(crop)
    assert isinstance(layer, napari.layers.Image)
    assert tuple(layer.scale) == (30, 8, 8) and tuple(layer.translate) == (30, 16, 32)
    np.testing.assert_array_equal(np.asarray(layer.data), raw[1:3, 2:6, 4:])
    assert layer.metadata["orgaseg"]["command"] == "crop"
    # an MRC file (IMOD, SerialEM) at the voxel size its header gives in Å
    import mrcfile

    with mrcfile.new(tmp_path / "raw.mrc") as mrc:
        mrc.set_data(raw.astype(np.int16))
        mrc.voxel_size = (80.0, 80.0, 300.0)  # x, y, z
    layer = _image_layer(tmp_path / "raw.mrc")
    assert layer.name == "raw" and tuple(layer.scale) == pytest.approx((30, 8, 8))
    np.testing.assert_array_equal(np.asarray(layer.data), raw)


def test_reader_opens_an_image_pyramid_as_a_multiscale_layer(tmp_path):
    import zarr

    raw = np.random.default_rng(0).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    path = tmp_path / "raw.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level, image in enumerate((raw, raw[:, ::2, ::2])):
        root.create_array(str(level), data=image, chunks=(1, 32, 32))
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [30.0, 8.0 * 2**level, 8.0 * 2**level]},
            {"type": "translation", "translation": [60.0, 16.0 + 4.0 * level, 4.0 * level]}]})
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets, "axes": [
        {"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]}]
    layer = _image_layer(path)
    assert isinstance(layer, napari.layers.Image) and layer.multiscale
    assert [level.shape for level in layer.data] == [(2, 64, 64), (2, 32, 32)]
    assert tuple(layer.scale) == (30, 8, 8) and tuple(layer.translate) == (60, 16, 0)
    np.testing.assert_array_equal(np.asarray(layer.data[0]), raw)


def test_a_raw_image_opens_beside_its_segmentation_at_the_same_scale(cell, segmented, gl, tmp_path,
                                                                    make_napari_viewer):
    from orgaseg.io.writers import write_tiff_image

    path, _ = segmented
    raw = write_tiff_image(tmp_path / "raw.tif", cell.raw, voxel_size=VOXEL)  # as the demo writes phantom_raw.tif
    viewer = make_napari_viewer()
    # the README's 'napari --plugin orgaseg segmentation.ome.zarr phantom_raw.tif'
    labels, image = viewer.open([str(path), str(raw)], plugin="orgaseg")
    assert isinstance(labels, napari.layers.Labels) and isinstance(image, napari.layers.Image)
    assert tuple(image.scale) == tuple(labels.scale) == VOXEL


def test_named_labels_and_instances_open_with_their_names(cell, segmented, tmp_path, make_napari_viewer):
    from orgaseg.organelles import make_instances, name_clusters, points_from_arrays

    path, _ = segmented
    coords, names = _clicks(cell)
    named = name_clusters(path, annotations=points_from_arrays(coords, names, shape=cell.raw.shape),
                          output=tmp_path / "named.ome.zarr")
    instances = make_instances(named.path, tmp_path / "instances.ome.zarr")
    viewer = make_napari_viewer()
    (named_layer,) = viewer.open(str(named.path), plugin="orgaseg")
    assert named_layer.metadata["kind"] == "named"
    assert names_of(named_layer) == dict(enumerate(named.names))
    assert named_layer.colormap.map(np.array([0]))[0, 3] == 0  # unassigned stays transparent
    (instance_layer,) = viewer.open(str(instances.path), plugin="orgaseg")
    assert instance_layer.metadata["kind"] == "instances"
    classes = names_of(instance_layer)
    assert [classes[i] for i in range(1, len(instances.classes) + 1)] == instances.classes


def test_writer_keeps_names_scale_and_provenance(tmp_path, make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((3, 10, 12), np.uint8)
    labels[1, 2:5, 3:7] = 2
    layer = viewer.add_labels(labels, scale=(30, 8, 8), translate=(90, 16, 0), name="mine",
                              features={"index": [0, 1, 2], "name": ["unassigned", "nucleus", "mitochondria"]},
                              metadata={"orgaseg": {"method": "baseline", "k": 6}, "kind": "named"})
    (written,) = write_named_labels(str(tmp_path / "mine.ome.zarr"), layer.data, layer.as_layer_data_tuple()[1])
    (back,) = viewer.open(written, plugin="orgaseg")
    np.testing.assert_array_equal(np.asarray(back.data), labels)
    assert tuple(back.scale) == (30, 8, 8) and tuple(back.translate) == (90, 16, 0)
    assert names_of(back) == {0: "unassigned", 1: "nucleus", 2: "mitochondria"}
    assert back.metadata["orgaseg"]["source"] == {"method": "baseline", "k": 6}
    with pytest.raises(OrgasegError, match="exists, and orgaseg's writer never replaces a file"):
        write_named_labels(written, layer.data, layer.as_layer_data_tuple()[1])


def test_writer_converts_the_layers_units_and_writes_no_size_for_naparis_default(tmp_path):
    from napari.layers import Labels

    from orgaseg.io import VoxelSizeWarning

    labels = np.zeros((3, 10, 12), np.uint8)
    labels[1, 2:5, 3:7] = 1
    in_um = Labels(labels, scale=(0.03, 0.008, 0.008), translate=(0.09, 0.016, 0), units=("um", "um", "um"))
    (written,) = write_named_labels(str(tmp_path / "um.ome.zarr"), labels, in_um.as_layer_data_tuple()[1])
    volume = orgaseg.open_volume(written)
    assert volume.voxel_size == pytest.approx((30, 8, 8)) and volume.origin == pytest.approx((90, 16, 0))
    # napari's default scale, 1 x 1 x 1 pixel, says nothing of the voxel size: the file carries none, not 1 nm
    for suffix in (".ome.zarr", ".tif"):
        (written,) = write_named_labels(str(tmp_path / f"px{suffix}"), labels, Labels(labels).as_layer_data_tuple()[1])
        with pytest.warns(VoxelSizeWarning, match="voxel size unknown"):
            assert orgaseg.open_volume(written).attrs.get("voxel_size_assumed")
    in_seconds = Labels(labels, units=("s", "nm", "nm")).as_layer_data_tuple()[1]
    with pytest.raises(OrgasegError, match="the layer's unit 'second' is not a length"):
        write_named_labels(str(tmp_path / "s.ome.zarr"), labels, in_seconds)


def test_writer_gives_a_single_image_the_thickness_of_its_pixels(tmp_path):
    # as orgaseg reads a single image (and measure measures its instances: a slab that thick), not 1 nm
    from napari.layers import Labels

    labels = np.zeros((10, 12), np.uint8)
    labels[2:5, 3:7] = 1
    layer = Labels(labels, scale=(4.6, 4.6), units=("nm", "nm"))
    (written,) = write_named_labels(str(tmp_path / "one.ome.zarr"), labels, layer.as_layer_data_tuple()[1])
    assert orgaseg.open_volume(written).voxel_size == pytest.approx((4.6, 4.6, 4.6))


def test_saved_clusters_can_be_named(cell, segmented, tmp_path, make_napari_viewer):
    from orgaseg.organelles import name_clusters, points_from_arrays

    path, labels = segmented
    viewer = make_napari_viewer()
    (clusters,) = viewer.open(str(path), plugin="orgaseg")  # as the Segment widget's clusters, to be saved
    (saved,) = clusters.save(str(tmp_path / "saved.ome.zarr"), plugin="orgaseg")
    (back,) = viewer.open(saved, plugin="orgaseg")
    assert back.metadata["kind"] == "clusters" and back.metadata["orgaseg"]["source"]["k"] == 4
    widget = NamingWidget(viewer)
    widget.clusters.choices = [back]  # (the widget is not docked: its choices are set here)
    widget.clusters.value = back
    coords, names = _clicks(cell)
    annotations = points_from_arrays(coords, names, shape=labels.shape)
    named = name_clusters(widget.segmentation(), annotations=annotations)  # what Name clusters runs
    np.testing.assert_array_equal(named.labels, name_clusters(path, annotations=annotations).labels)


def test_saving_over_a_file_from_napari_says_why_it_is_refused(tmp_path, make_napari_viewer, monkeypatch):
    from napari.utils import notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.ones((2, 4, 4), np.uint8), name="mine")
    path = tmp_path / "mine.ome.zarr"
    assert layer.save(str(path), plugin="orgaseg") == [str(path)]
    before = sorted(p.name for p in path.rglob("*"))
    with pytest.warns(UserWarning, match="not a valid writer"):  # napari's own words
        assert layer.save(str(path), plugin="orgaseg") == []
    assert len(shown) == 1 and "could not save mine.ome.zarr" in shown[0] and "never replaces a file" in shown[0]
    assert sorted(p.name for p in path.rglob("*")) == before


def _segment_widget(viewer, cell):
    image = viewer.add_image(cell.raw, scale=VOXEL, name="cell")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.image.value = image
    widget.method.value = "baseline"
    widget.k.value = 4
    return widget


def test_segment_widget_adds_the_clusters_of_segment(cell, gl, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_widget(viewer, cell)
    messages = []
    widget.tasks.progressed.connect(messages.append)
    widget.run_button.clicked()
    _finish(qtbot, widget)
    layer = viewer.layers[-1]
    assert isinstance(layer, napari.layers.Labels) and layer.name == "cell baseline K=4"
    expected = orgaseg.segment(cell.raw, voxel_size=VOXEL, k=4).labels  # same defaults, same seed
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.metadata["orgaseg"]["k"] == 4 and tuple(layer.scale) == VOXEL
    assert any("blocks" in m for m in messages) and widget.status.value.startswith("done")
    assert viewer.status.startswith("orgaseg: done")


def test_segment_widget_cancel_stops_the_run(cell, gl, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_widget(viewer, cell)
    widget.run()
    widget.cancel_button.clicked()
    _finish(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cell"]
    assert widget.status.value.startswith("cancelled") and widget.run_button.enabled


def test_segment_widget_reports_bad_fields(cell, gl, make_napari_viewer):
    viewer = make_napari_viewer()
    widget = _segment_widget(viewer, cell)
    widget.voxel_size.value = "20 abc"
    widget.run()
    assert not widget.tasks.busy and "voxel size: expected numbers" in widget.status.value


def test_segment_widget_refuses_an_unknown_voxel_size(cell, qapp, tmp_path):
    from napari.components import ViewerModel

    from orgaseg.io.writers import write_tiff_image

    viewer = ViewerModel()  # no OpenGL needed: the fields only
    widget = SegmentWidget(viewer)
    unscaled = viewer.add_image(cell.raw, name="dragged in")  # as napari's TIFF reader opens it: scale 1, 1, 1
    widget.image.choices = [unscaled]  # (not docked in a window, so the choices are set here)
    widget.image.value = unscaled
    with pytest.raises(OrgasegError, match="voxel size unknown"):
        widget.arguments()
    widget.run()
    assert not widget.tasks.busy and len(viewer.layers) == 1
    assert "voxel size unknown" in widget.status.value and "type the voxel size" in widget.status.value
    widget.voxel_size.value = "20"
    assert widget.arguments()["data"].voxel_size == VOXEL
    # opened with orgaseg's reader, the image brings its voxel size
    widget.voxel_size.value = ""
    opened = viewer.add_layer(_image_layer(write_tiff_image(tmp_path / "cell.tif", cell.raw, voxel_size=VOXEL)))
    widget.image.choices = [unscaled, opened]
    widget.image.value = opened
    assert widget.arguments()["data"].voxel_size == VOXEL


def test_segment_widget_places_the_image_at_a_typed_voxel_size(cell, qapp, qtbot):
    from napari.components import ViewerModel

    expected = orgaseg.segment(cell.raw, voxel_size=VOXEL, k=4).labels  # (imports what the worker runs, too)
    viewer = ViewerModel()  # no OpenGL needed
    widget = SegmentWidget(viewer)
    image = viewer.add_image(cell.raw, translate=(0, 2, 3), name="dragged in")  # scale 1 x 1 x 1: in voxels
    widget.image.choices = [image]  # (not docked in a window, so the choices are set here)
    widget.image.value, widget.k.value, widget.voxel_size.value = image, 4, "20"
    widget.run()
    _finish(qtbot, widget)
    labels = viewer.layers[-1]
    np.testing.assert_array_equal(labels.data, expected)
    # the clusters lie over the image: both at the voxel size typed, where the image was in voxels
    assert tuple(labels.scale) == tuple(image.scale) == VOXEL
    assert tuple(labels.translate) == tuple(image.translate) == (0, 40, 60)
    assert labels.metadata["orgaseg"]["input"]["voxel_size"] == list(VOXEL)


def test_segment_widget_segments_a_single_image_as_one_slice(cell, qapp, qtbot):
    # as the command line reads one image (a PNG); it was refused as 2D data
    from napari.components import ViewerModel

    expected = orgaseg.segment(cell.raw[:1], voxel_size=VOXEL, k=4).labels
    viewer = ViewerModel()  # no OpenGL needed
    widget = SegmentWidget(viewer)
    unscaled = viewer.add_image(cell.raw[0], name="dragged in")  # napari's default scale: 1 x 1 pixel
    scaled = viewer.add_image(cell.raw[0], scale=VOXEL[1:], name="opened")
    widget.image.choices = [unscaled, scaled]  # (not docked in a window, so the choices are set here)
    widget.image.value, widget.k.value = unscaled, 4
    with pytest.raises(OrgasegError, match="voxel size unknown"):
        widget.arguments()
    widget.image.value = scaled  # one slice as thick as its pixels are high
    assert widget.arguments()["data"].voxel_size == VOXEL and widget.arguments()["data"].shape == (1, 48, 48)
    widget.image.value, widget.voxel_size.value = unscaled, "20"
    widget.run()
    _finish(qtbot, widget)
    labels = viewer.layers[-1]
    np.testing.assert_array_equal(labels.data, expected)
    # the image takes the typed voxel size in its two axes, and the clusters lie over it
    assert tuple(unscaled.scale) == VOXEL[1:] and tuple(labels.scale) == VOXEL
    # clicks on the image's clusters map to their voxels
    from orgaseg.napari.layers import to_voxels

    clicks = viewer.add_points(np.array([[0.0, 100.0, 60.0]]), ndim=3)
    np.testing.assert_allclose(to_voxels(clicks, unscaled), [[0.0, 5.0, 3.0]])


def test_segment_widget_refuses_an_rgb_layer(cell, qapp):
    from napari.components import ViewerModel

    viewer = ViewerModel()  # no OpenGL needed: the fields only
    widget = SegmentWidget(viewer)
    # a (y, x, 3) colour image, e.g. a screenshot: not a stack of y sections of x by 3 pixels
    rgb = viewer.add_image(np.repeat(cell.raw[0][..., None], 3, axis=-1), rgb=True, scale=VOXEL[1:], name="rgb")
    widget.image.choices = [rgb]  # (not docked in a window, so the choices are set here)
    widget.image.value = rgb
    widget.voxel_size.value = "20"
    with pytest.raises(OrgasegError, match=r"'rgb' is an RGB image; .*right-click the layer > Split RGB"):
        widget.arguments()
    widget.run()
    assert not widget.tasks.busy and "RGB image" in widget.status.value and len(viewer.layers) == 1


def test_naming_widget_names_clicked_clusters(cell, segmented, make_napari_viewer, qtbot):
    from orgaseg.organelles import name_clusters, points_from_arrays

    path, labels = segmented
    viewer = make_napari_viewer()
    (clusters,) = viewer.open(str(path), plugin="orgaseg")
    widget = NamingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.clusters.value = clusters
    points = widget.add_points_layer()
    coords, names = _clicks(cell)
    for coord, name in zip(coords, names):  # as clicks: type the name, click
        widget.organelle.value = name
        points.add(coord)  # napari turns a click into the layer's data coordinates: voxels at this scale
    assert list(points.features[NAME_FEATURE]) == names
    widget.run_button.clicked()
    _finish(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    named = viewer.layers[-1]
    assert named.metadata["kind"] == "named" and named.name == "seg (clusters) named"
    expected = name_clusters(path, annotations=points_from_arrays(coords, names, shape=labels.shape))
    np.testing.assert_array_equal(named.data, expected.labels)
    assert names_of(named) == dict(enumerate(expected.names))
    assert widget.summary.value == expected.naming.summary()


def test_naming_widget_needs_clicks(segmented, make_napari_viewer):
    path, _ = segmented
    viewer = make_napari_viewer()
    (clusters,) = viewer.open(str(path), plugin="orgaseg")
    widget = NamingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.clusters.value = clusters
    widget.add_points_layer()
    widget.run()
    assert not widget.tasks.busy and "has no points" in widget.status.value
    # a points layer made in a 2D view: (y, x) clicks, refused with a word rather than a traceback
    flat = viewer.add_points(np.array([[10.0, 10.0]]), ndim=2, name="flat", features={NAME_FEATURE: ["nucleus"]})
    widget.reset_choices()
    widget.points.value = flat
    widget.run()
    assert not widget.tasks.busy and "'flat' holds 2D points" in widget.status.value


def _measured(viewer, layer, qtbot) -> MeasureWidget:
    """The Morphometrics widget, docked, after it measured ``layer``."""
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.instances.value = layer
    widget.run_button.clicked()
    _finish(qtbot, widget)
    return widget


def test_measure_widget_fills_the_table_and_highlights_the_selected_instance(tmp_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    instances = np.zeros((10, 20, 30), np.uint16)
    instances[1:5, 2:6, 3:9] = 1    # 4 x 4 x 6 voxels
    instances[6:9, 10:18, 20:28] = 2  # 3 x 8 x 8 voxels
    layer = viewer.add_labels(instances, scale=(40, 10, 10), name="boxes",
                              features={"index": [1, 2], "class": ["granules", "mitochondria"]})
    widget = _measured(viewer, layer, qtbot)
    shown = widget.table.value
    assert list(shown["columns"][:3]) == ["id", "class", "voxels"] and len(shown["data"]) == 2
    volumes = widget.morphometrics.table["volume_um3"]
    np.testing.assert_allclose(volumes, [96 * 4000 / 1e9, 192 * 4000 / 1e9])
    assert list(widget.morphometrics.table["class"]) == ["granules", "mitochondria"]
    assert [row[:2] for row in widget.summary.value["data"]] == [["granules", 1], ["mitochondria", 1], ["all", 2]]
    widget.table.native.selectRow(1)
    assert layer.selected_label == 2 and layer.show_selected_label
    # the view moves to the second box's centroid: z voxels 6..8 -> 7 * 40 nm
    assert viewer.dims.point[0] == pytest.approx(7 * 40.0)
    saved = widget.save(tmp_path / "boxes.csv")
    rows = list(csv.DictReader(saved.open()))
    assert [row["class"] for row in rows] == ["granules", "mitochondria"]
    assert widget.save(tmp_path / "boxes.csv") is None and "exists" in widget.status.value


def test_measure_widget_measures_a_single_image_in_its_plane(make_napari_viewer, qtbot):
    # a 2D micrograph's instances: areas and perimeters, no z; selecting a row centres the view in its plane
    viewer = make_napari_viewer()
    instances = np.zeros((20, 30), np.uint16)
    instances[2:6, 3:9] = 1
    instances[10:18, 20:28] = 2
    layer = viewer.add_labels(instances, scale=(10, 10), name="section")
    widget = _measured(viewer, layer, qtbot)
    table = widget.morphometrics.table
    assert "centroid_z_nm" not in table and "volume_um3" not in table
    np.testing.assert_allclose(table["area_um2"], [24 * 100 / 1e6, 64 * 100 / 1e6])
    widget.table.native.selectRow(1)
    assert layer.selected_label == 2
    assert viewer.dims.point[-2] == pytest.approx(13.5 * 10.0, abs=10)  # (on the grid of its pixels)


def test_measure_widget_lets_go_of_the_layer_it_measured_before(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    instances = np.zeros((4, 10, 10), np.uint16)
    instances[1:3, 1:4, 1:4], instances[1:3, 6:9, 6:9] = 1, 2
    first = viewer.add_labels(instances, scale=(40, 10, 10), name="first")
    second = viewer.add_labels(instances.copy(), scale=(40, 10, 10), name="second")
    widget = _measured(viewer, first, qtbot)
    widget.table.native.selectRow(1)
    assert first.show_selected_label and first.selected_label == 2
    widget.instances.value = second
    widget.run()
    _finish(qtbot, widget)
    assert not first.show_selected_label  # all its instances show again: the table is the second layer's now
    widget.table.native.selectRow(0)
    assert second.show_selected_label and second.selected_label == 1 and not first.show_selected_label


def test_measure_widget_refuses_a_layer_at_naparis_default_scale(make_napari_viewer, qtbot):
    # measured at 1 nm voxels, its volumes would be off by the cube of the real voxel size, without a word
    viewer = make_napari_viewer()
    instances = np.zeros((4, 10, 10), np.uint16)
    instances[1:3, 1:4, 1:4] = 1
    unscaled = viewer.add_labels(instances, name="painted")
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.instances.value = unscaled
    widget.run()
    assert not widget.tasks.busy and widget.morphometrics is None
    assert "voxel size unknown: layer 'painted' has napari's default scale 1 x 1 x 1" in widget.status.value
    unscaled.scale = (40, 10, 10)
    widget.run()
    _finish(qtbot, widget)
    assert widget.morphometrics.table["volume_um3"][0] == pytest.approx(2 * 3 * 3 * 40 * 10 * 10 / 1e9)


def test_a_file_without_voxel_size_opens_in_pixels_and_saves_without_one(tmp_path, make_napari_viewer):
    from orgaseg.io import VoxelSizeWarning

    labels = np.zeros((3, 10, 12), np.uint8)
    labels[1, 2:5, 3:7] = 1
    path = orgaseg.io.write_labels(tmp_path / "guess.ome.zarr", labels, voxel_size=None,
                                   provenance={"layer": "made"}, label_names=["", "a"])
    viewer = make_napari_viewer()
    with pytest.warns(VoxelSizeWarning, match="voxel size unknown"):
        (layer,) = viewer.open(str(path), plugin="orgaseg")
    assert tuple(map(str, layer.units)) == ("pixel",) * 3  # not 1 nm: the 1 is a guess
    (saved,) = layer.save(str(tmp_path / "saved.ome.zarr"), plugin="orgaseg")
    with pytest.warns(VoxelSizeWarning, match="voxel size unknown"):  # the guess did not become 1 nm voxels
        assert orgaseg.open_volume(saved).attrs.get("voxel_size_assumed")


def test_the_reader_says_an_unknown_voxel_size_as_it_bears_on_the_layer(tmp_path):
    # open_volume's warning speaks of segmenting ("assuming 1 x 1 x 1 nm", "pass voxel_size=(z, y, x)"); napari
    # opens the layer in pixels, and its user gives the size in the Segment widget
    import warnings

    from orgaseg.io import VoxelSizeWarning

    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    labels = np.zeros((3, 8, 8), np.uint8)
    path = orgaseg.io.write_labels(tmp_path / "guess.ome.zarr", labels, voxel_size=None, provenance={"layer": "made"},
                                   label_names=["", "a"])
    for opened in (tmp_path / "plain.tif", path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            napari_get_reader(str(opened))(str(opened))
        said = [str(w.message) for w in caught if issubclass(w.category, VoxelSizeWarning)]
        expected = (f"{opened}: voxel size unknown: opened at napari's default scale, 1 x 1 x 1 pixel, not in nm; "
                    "type the voxel size in nm in the Segment widget, or save it in the file (Fiji: Image > Properties)")
        assert said == [expected], said


def test_measure_widget_centres_on_an_instance_of_a_translated_volume(tmp_path, make_napari_viewer, qtbot):
    from orgaseg.io.writers import write_labels

    instances = np.zeros((10, 20, 30), np.uint16)
    instances[6:9, 10:18, 20:28] = 1  # 3 x 8 x 8 voxels
    # instances of a crop: placed at its corner in the full volume, as 'orgaseg crop' outputs are
    path = write_labels(tmp_path / "instances.ome.zarr", instances, voxel_size=(40, 10, 10), origin=(400, 100, 50),
                        provenance={"command": "instances"}, label_names=["background", "mitochondria"])
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="orgaseg")
    assert tuple(layer.translate) == (400, 100, 50)
    widget = _measured(viewer, layer, qtbot)
    widget.table.native.selectRow(0)
    centroid = (400 + 7 * 40, 100 + 13.5 * 10, 50 + 23.5 * 10)  # the full volume's coordinates, as the table's
    np.testing.assert_allclose([widget.morphometrics.table[f"centroid_{axis}_nm"][0] for axis in "zyx"], centroid)
    assert viewer.dims.point[0] == pytest.approx(centroid[0])  # the slice shown (y and x snap to the voxel grid)
    assert viewer_camera(viewer).center == pytest.approx(centroid)


def test_widgets_work_on_what_was_painted_over_a_file(cell, segmented, tmp_path, make_napari_viewer, qtbot):
    from orgaseg.io.writers import write_labels
    from orgaseg.organelles import name_clusters, points_from_arrays
    from orgaseg.segmentation import Segmentation

    instances = np.zeros((10, 20, 30), np.uint16)
    instances[1:5, 2:6, 3:9] = 1
    instances[6:9, 10:18, 20:28] = 2
    path = write_labels(tmp_path / "instances.ome.zarr", instances, voxel_size=(40, 10, 10),
                        provenance={"command": "instances"}, label_names=["background", "granules", "mitochondria"])
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="orgaseg")
    widget = _measured(viewer, layer, qtbot)
    assert list(widget.morphometrics.table["voxels"]) == [96, 192]  # measured from the file
    layer.brush_size = 1
    layer.paint((2, 3, 4), 0)  # the user erases one voxel of the granule with napari's brush
    widget.run()
    _finish(qtbot, widget)
    assert list(widget.morphometrics.table["voxels"]) == [95, 192]  # the layer as painted, not the file
    assert list(widget.morphometrics.table["class"]) == ["granules", "mitochondria"]
    # the clusters too: naming reads the painted layer
    seg_path, labels = segmented
    (clusters,) = viewer.open(str(seg_path), plugin="orgaseg")
    labels = labels.copy()
    labels[4, 24, 24] = (labels[4, 24, 24] + 1) % 4  # another cluster
    clusters.brush_size = 1
    clusters.paint((4, 24, 24), labels[4, 24, 24])
    naming = NamingWidget(viewer)
    naming.clusters.choices = [clusters]  # (the widget is not docked: its choices are set here)
    naming.clusters.value = clusters
    segmentation = naming.segmentation()
    np.testing.assert_array_equal(segmentation.labels, labels)
    coords, names = _clicks(cell)
    np.testing.assert_array_equal(
        name_clusters(segmentation, annotations=points_from_arrays(coords, names, shape=labels.shape)).labels,
        name_clusters(Segmentation(labels, None, None, clusters.metadata["orgaseg"]),
                      annotations=points_from_arrays(coords, names, shape=labels.shape)).labels)


def test_naming_widget_refines_with_the_segmented_image(cell, gl, make_napari_viewer, qtbot):
    from orgaseg.io.volume import Volume
    from orgaseg.organelles import name_clusters, points_from_arrays
    from orgaseg.segmentation import Segmentation

    viewer = make_napari_viewer()
    segment = _segment_widget(viewer, cell)
    segment.run()
    _finish(qtbot, segment)
    clusters = viewer.layers[-1]
    widget = NamingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.clusters.value = clusters
    points = widget.add_points_layer()
    coords, names = _clicks(cell)
    for coord, name in zip(coords, names):
        widget.organelle.value = name
        points.add(coord)
    widget.refine.value, widget.image.value, widget.z_context.value = True, viewer.layers["cell"], True
    widget.run()
    _finish(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    named = viewer.layers[-1]
    assert named.metadata["orgaseg"]["refined"] is True
    assert named.metadata["orgaseg"]["classifier"]["z_context"] is True
    expected = name_clusters(Segmentation(np.asarray(clusters.data), None, None, clusters.metadata["orgaseg"]),
                             annotations=points_from_arrays(coords, names, shape=cell.raw.shape), refine=True,
                             z_context=True, raw=Volume(cell.raw, voxel_size=VOXEL))
    np.testing.assert_array_equal(named.data, expected.labels)


def test_segment_widget_labels_with_a_trained_graph_clusterer_at_its_own_k(cell, qapp, tmp_path):
    import json

    from napari.components import ViewerModel

    from orgaseg.methods.graph_method import FORMAT

    viewer = ViewerModel()  # no OpenGL needed: the fields only
    image = viewer.add_image(cell.raw, scale=VOXEL, name="cell")
    widget = SegmentWidget(viewer)
    widget.image.choices = [image]  # (not docked in a window, so the choices are set here)
    widget.image.value = image
    widget.k.value = 4
    checkpoint = tmp_path / "cs2c.json"
    checkpoint.write_text(json.dumps({"format": FORMAT, "method": "cs2c"}))
    widget.model.value = checkpoint
    assert widget.arguments()["k"] is None and widget.arguments()["model"] == checkpoint
    assert "*.json" in widget.model.filter
    widget.model.value = tmp_path / "encoder.pt"
    assert widget.arguments()["k"] == 4
