"""Instances: blockwise connected components with ids merged across block faces, and the clean-up."""

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.morphology import remove_small_objects

from orgaseg.cli import main
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io import open_volume, write_labels, write_tiff_image
from orgaseg.organelles import make_instances, read_label_names
from orgaseg.organelles.cleanup import Cleanup, majority_filter
from orgaseg.pipeline.executors import SerialExecutor, ThreadExecutor
from orgaseg.synthetic import make_cell

NAMES = ["unassigned", "mitochondria", "granules"]

VNC_MITOCHONDRIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc" / "stack1" / "mitochondria"

#: Block shapes that cut objects every few voxels, along one axis only, or not at all.
BLOCK_SHAPES = [None, (7, 13, 11), (1, 64, 64), (24, 1, 9), (4, 4, 4)]


def balls(shape=(24, 64, 64), n=(6, 9), seed=0):
    """Balls of two classes at random places, at least two voxels apart; returns labels and (class, centre) per ball."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    grid = np.indices(shape)
    drawn = []
    for value, count in zip((1, 2), n):
        placed = 0
        while placed < count:
            radius = rng.uniform(2.0, 4.5)
            centre = rng.uniform(0, shape)  # may be cut by the volume's border
            distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
            if (labels[distance < radius + 2] != 0).any() or not (distance < radius).any():
                continue
            labels[distance < radius] = value
            drawn.append((value, tuple(np.argwhere(distance < radius)[0])))
            placed += 1
    return labels, drawn


def smooth_classes(shape=(24, 64, 64), seed=1):
    """Three classes in twisted blobs: many components, many cut by any block grid."""
    field = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return np.digitize(field, [0.49, 0.51]).astype(np.uint8)


def test_counts_equal_the_known_number_of_organelles(tmp_path):
    labels, drawn = balls()
    path = write_labels(tmp_path / "named.ome.zarr", labels, voxel_size=(10, 5, 5), provenance={}, label_names=NAMES)
    result = make_instances(path, block_shape=(8, 20, 20))
    assert result.counts == {"mitochondria": 6, "granules": 9}
    for value, voxel in drawn:  # every ball is one instance of its class
        assert result.classes[result.labels[voxel] - 1] == NAMES[value]
    assert len(np.unique(result.labels)) == 1 + 15
    only = make_instances(path, classes=["granules"], block_shape=(8, 20, 20))
    assert only.counts == {"granules": 9}


@pytest.mark.parametrize("block_shape", BLOCK_SHAPES)
def test_blockwise_components_equal_whole_volume_components(block_shape):
    classes = smooth_classes()
    expected = label(classes, background=0, connectivity=1)
    assert expected.max() > 20
    result = make_instances(classes, block_shape=block_shape)
    np.testing.assert_array_equal(result.labels, expected)  # ids too: numbered by first voxel in raster order
    first = np.unique(expected, return_index=True)[1][1:]  # of ids 1, 2, ...
    assert np.all(np.diff(first) > 0)


def test_phantom_components_equal_scipy_labels():
    phantom = make_cell((24, 96, 96), (20, 20, 20), seed=3)
    granules = phantom.labels == 4
    expected, count = ndi.label(granules)
    assert count > 3
    result = make_instances(phantom.labels, classes=[4], block_shape=(5, 17, 23))
    np.testing.assert_array_equal(result.labels, expected)
    assert result.counts == {"4": count}


def test_one_class_given_alone_is_that_class():
    labels = np.zeros((1, 4, 8), np.uint8)
    labels[0, 0, :2], labels[0, 2, :2], labels[0, 0, 4:6] = 1, 2, 12
    # "12" was read as its characters, classes 1 and 2 (three instances), and 12 failed as "not iterable"
    for one in ("12", 12, np.uint8(12)):
        result = make_instances(labels, classes=one)
        assert result.counts == {"12": 1} and result.labels.max() == 1


def test_connectivity_is_face_neighbours_only():
    classes = np.zeros((4, 6, 6), np.uint8)
    classes[1, 2, 2] = classes[1, 3, 3] = 1  # an edge contact across a block border
    classes[2, 4, 4] = 1  # a corner contact with the voxel above
    classes[0, 0, 0] = classes[0, 0, 1] = 1  # a face contact across a block border
    result = make_instances(classes, block_shape=(2, 3, 3))
    assert result.labels.max() == 4
    assert result.labels[0, 0, 0] == result.labels[0, 0, 1]
    assert len({result.labels[1, 2, 2], result.labels[1, 3, 3], result.labels[2, 4, 4]}) == 3
    np.testing.assert_array_equal(result.labels, ndi.label(classes)[0])


@pytest.mark.parametrize("connectivity, rank", [(18, 2), (26, 3)])
def test_edge_and_corner_contacts_join_across_block_borders(connectivity, rank):
    classes = np.zeros((4, 6, 6), np.uint8)
    classes[1, 2, 2] = classes[1, 3, 3] = 1  # an edge contact across a block border
    classes[2, 4, 4] = 1  # a corner contact with (1, 3, 3), across a block corner
    classes[0, 0, 0] = classes[0, 0, 1] = 1  # a face contact across a block border
    result = make_instances(classes, block_shape=(2, 3, 3), connectivity=connectivity)
    assert result.labels[1, 2, 2] == result.labels[1, 3, 3]
    assert (result.labels[2, 4, 4] == result.labels[1, 3, 3]) == (connectivity == 26)
    np.testing.assert_array_equal(result.labels, label(classes, background=0, connectivity=rank))


@pytest.mark.parametrize("connectivity, rank", [(6, 1), (18, 2), (26, 3)])
@pytest.mark.parametrize("block_shape", BLOCK_SHAPES[1:] + [(3, 5, 2)])
def test_blockwise_equals_whole_for_every_connectivity(connectivity, rank, block_shape):
    # scattered voxels of two classes: most contacts are along edges and at corners
    classes = (np.random.default_rng(7).random((12, 20, 20)) * 9).astype(np.uint8)
    classes[classes > 2] = 0
    expected = label(classes, background=0, connectivity=rank)
    assert expected.max() > 100
    result = make_instances(classes, block_shape=block_shape, connectivity=connectivity)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.provenance["connectivity"] == connectivity


def test_small_components_and_holes_follow_the_connectivity():
    mask = np.zeros((9, 12, 12), bool)
    mask[2, 2, 2] = mask[3, 3, 3] = mask[4, 4, 4] = True  # three voxels, one object only at 26
    mask[1:8, 6:11, 6:11] = True
    mask[4, 8, 8] = False  # a hole: enclosed through faces
    for connectivity, rank in ((6, 1), (26, 3)):
        expected = label(remove_small_objects(ndi.binary_fill_holes(mask), max_size=1, connectivity=rank),
                         connectivity=rank)
        result = make_instances(mask.astype(np.uint8), min_size_nm3=2, fill_holes=True, voxel_size=(1, 1, 1),
                                block_shape=(3, 4, 5), connectivity=connectivity)
        np.testing.assert_array_equal(result.labels, expected)
    assert result.labels.max() == 2 and result.labels[4, 8, 8] > 0


def test_the_merger_keeps_no_plane_once_every_neighbour_arrived(monkeypatch):
    from orgaseg.io.volume import as_volume
    from orgaseg.organelles.instances import _Classes, _components_pass, _Merger, _Stage
    from orgaseg.pipeline.blocks import make_blocks
    from orgaseg.pipeline.executors import SerialExecutor
    from orgaseg.pipeline.tasks import VolumeSource

    classes = smooth_classes(shape=(8, 16, 16))
    blocks = make_blocks(classes.shape, (3, 5, 6))
    kept = []
    add = _Merger.add

    def watch(self, block, result):
        add(self, block, result)
        kept.append(sum(part.low is not None for part in self.parts))

    stage = _Stage(VolumeSource(as_volume(classes)), _Classes(None), rank=3)
    monkeypatch.setattr(_Merger, "add", watch)
    _components_pass(stage, "objects", blocks, (3, 5, 6), SerialExecutor(), None, "test")
    assert kept[-1] == 0  # the last block met everything
    assert max(kept) < len(blocks)  # planes were dropped along the way


def test_two_classes_touching_stay_apart():
    classes = np.zeros((2, 4, 8), np.uint8)
    classes[:, :, :4], classes[:, :, 4:] = 1, 2
    result = make_instances(classes, block_shape=(1, 2, 3))
    assert result.labels.max() == 2 and result.classes == ["1", "2"]


def test_threads_give_the_same_ids():
    classes = smooth_classes(seed=4)
    with ThreadExecutor(2) as executor:
        threaded = make_instances(classes, block_shape=(6, 16, 16), executor=executor)
    np.testing.assert_array_equal(threaded.labels, label(classes, background=0, connectivity=1))


def test_fill_holes_equals_binary_fill_holes_across_blocks():
    mask = np.zeros((20, 40, 40), bool)
    grid = np.indices(mask.shape)
    for centre, outer, inner in (((10, 12, 12), 8, 5), ((10, 28, 28), 7, 3)):
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        mask |= (distance < outer) & (distance >= inner)  # hollow balls, their holes cut by blocks
    mask[0:3, 30:36, 2:8] = True
    mask[1, 32:34, 4:6] = False  # a hole at the volume's border is not enclosed... unless it is inside
    filled = ndi.binary_fill_holes(mask)
    assert filled.sum() > mask.sum() + 500
    for block_shape in [(20, 40, 40), (6, 9, 7)]:
        result = make_instances(mask.astype(np.uint8), fill_holes=True, block_shape=block_shape)
        np.testing.assert_array_equal(result.labels, label(filled, connectivity=1))


def test_fill_holes_fills_a_pocket_enclosed_in_the_plane_of_a_single_image():
    # a single image's two sides are not an edge the pocket opens to: filled as binary_fill_holes fills it in 2D
    mask = np.zeros((40, 50), bool)
    grid = np.indices(mask.shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, (20, 20))))
    mask |= (distance < 12) & (distance >= 5)  # a ring: the matrix of a mitochondrion the clusters missed
    mask[30:40, 40:50] = True
    mask[35:38, 44:47] = False  # a pocket in a square at the image's corner: enclosed in the plane too
    mask[0:6, 44:50] = True
    mask[0:3, 46:48] = False  # open to the image's edge: stays
    filled = ndi.binary_fill_holes(mask)
    assert filled.sum() == mask.sum() + (distance < 5).sum() + 9
    for block_shape in [(1, 40, 50), (1, 9, 7)]:
        result = make_instances(mask[None].astype(np.uint8), fill_holes=True, block_shape=block_shape)
        np.testing.assert_array_equal(result.labels[0], label(filled, connectivity=1))


def test_a_single_image_takes_its_smallest_size_as_an_area(tmp_path, capsys):
    from orgaseg.cli import main

    section = np.zeros((1, 30, 40), np.uint8)
    section[0, 2:12, 2:12] = 1  # 100 pixels: 2,500 nm^2 at 5 nm
    section[0, 20:24, 20:24] = 1  # 16 pixels: 400 nm^2
    section[0, 20:25, 30:35] = 1  # 25 pixels: 625 nm^2
    for z in (5.0, 50.0):  # whatever thickness the voxel size gives the image
        result = make_instances(section, min_size_nm2=625, voxel_size=(z, 5, 5))
        assert result.counts == {"1": 2} and result.labels[0, 22, 22] == 0 and result.labels[0, 22, 32] > 0
    with pytest.raises(OrgasegError, match=r"min_size_nm2.* is an area, for a single image; this volume has 2 "
                                           r"sections: give .*min_size_nm3"):
        make_instances(np.concatenate([section, section]), min_size_nm2=625, voxel_size=(50, 5, 5))
    with pytest.raises(OrgasegError, match="give one smallest size"):
        make_instances(section, min_size_nm2=625, min_size_nm3=1, voxel_size=(50, 5, 5))
    with pytest.raises(OrgasegError, match="min_size_nm2 must be a non-negative number"):
        make_instances(section, min_size_nm2=-1, voxel_size=(50, 5, 5))
    write_labels(tmp_path / "named.tif", section, voxel_size=(5.0, 5.0, 5.0), provenance={})
    assert main(["instances", str(tmp_path / "named.tif"), "-o", str(tmp_path / "inst.tif"), "--min-size-nm2", "625",
                 "--quiet"]) == 0
    assert "class 1: 2" in capsys.readouterr().out


class _SentOnceExecutor(SerialExecutor):
    """Runs blocks here on copies of the shared objects made the first time each is sent, as dask workers
    hold the copy :class:`~orgaseg.pipeline.executors.DaskExecutor` scattered once per object."""

    def __init__(self) -> None:
        self.sent: dict[int, tuple] = {}

    def map(self, fn, shared, items):
        copies = []
        for value in shared:
            if id(value) not in self.sent:
                self.sent[id(value)] = (value, pickle.loads(pickle.dumps(value)))
            copies.append(self.sent[id(value)][1])
        for key, args in items:
            yield key, fn(*copies, *args)

    def forget(self) -> None:
        self.sent.clear()


def test_the_clean_up_reaches_workers_that_received_the_block_stage_in_an_earlier_pass():
    mask = np.zeros((12, 24, 24), bool)
    grid = np.indices(mask.shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, (6, 12, 12))))
    mask |= (distance < 6) & (distance >= 3)  # a hollow ball
    mask[0, 0, 0] = True  # a speck the size limit removes
    expected = label(remove_small_objects(ndi.binary_fill_holes(mask), max_size=1, connectivity=1), connectivity=1)
    settings = {"min_size_nm3": 2, "fill_holes": True, "voxel_size": (1, 1, 1), "block_shape": (5, 9, 11)}
    result = make_instances(mask.astype(np.uint8), executor=_SentOnceExecutor(), **settings)
    np.testing.assert_array_equal(result.labels, expected)


def test_a_pocket_between_two_classes_is_not_a_hole_but_one_inside_one_class_is():
    classes = np.zeros((5, 9, 12), np.uint8)
    classes[1:4, 1:8, 1:6] = 1
    classes[1:4, 1:8, 6:11] = 2
    classes[2, 4, 5:7] = 0  # a pocket touching both classes
    classes[2, 2, 3] = 0  # a pocket inside class 1
    result = make_instances(classes, fill_holes=True, block_shape=(2, 4, 4))
    assert result.labels[2, 2, 3] > 0 and result.classes[result.labels[2, 2, 3] - 1] == "1"
    assert result.labels[2, 4, 5] == result.labels[2, 4, 6] == 0


def test_small_components_removed_by_volume_in_nm3():
    classes = smooth_classes(seed=5)
    voxel_size = (8.0, 4.0, 4.0)  # 128 nm^3 per voxel
    expected = np.zeros(classes.shape, bool)
    for value in (1, 2):
        expected |= remove_small_objects(classes == value, max_size=39, connectivity=1)  # keeps >= 40 voxels
    result = make_instances(classes, min_size_nm3=40 * 128.0, voxel_size=voxel_size, block_shape=(5, 11, 9))
    np.testing.assert_array_equal(result.labels > 0, expected)
    np.testing.assert_array_equal(result.labels, label(np.where(expected, classes, 0), background=0, connectivity=1))
    # removal runs before hole filling: a removed speck inside an object is filled
    combined = make_instances(classes, min_size_nm3=40 * 128.0, voxel_size=voxel_size, fill_holes=True,
                              block_shape=(5, 11, 9))
    assert (combined.labels > 0).sum() >= expected.sum()
    # a voxel size given with a Volume replaces the Volume's, as measure takes it (instances ignored it)
    from orgaseg.io import Volume

    wrong = Volume(classes, voxel_size=(1.0, 1.0, 1.0))
    given = make_instances(wrong, min_size_nm3=40 * 128.0, voxel_size=voxel_size, block_shape=(5, 11, 9))
    np.testing.assert_array_equal(given.labels, result.labels)
    assert given.provenance["voxel_size"] == list(voxel_size)


def test_majority_filter_is_exact_blockwise_and_matches_brute_force():
    classes = smooth_classes(seed=6)
    radius = (1, 2, 2)
    small = classes[:6, :8, :9]
    filtered = majority_filter(small, radius)
    for index in np.ndindex(small.shape):
        box = small[tuple(slice(max(0, i - r), i + r + 1) for i, r in zip(index, radius))]
        values, counts = np.unique(box, return_counts=True)
        own = small[index]
        expected = own if counts[values == own][0] == counts.max() else values[counts == counts.max()].min()
        assert filtered[index] == expected
    noisy = classes.copy()
    speckle = np.random.default_rng(0).random(classes.shape) < 0.02
    noisy[speckle] = np.random.default_rng(1).integers(0, 3, speckle.sum())
    result = make_instances(noisy, majority_nm=8.0, voxel_size=(8.0, 4.0, 4.0), block_shape=(5, 9, 13))
    whole = majority_filter(noisy, radius)
    np.testing.assert_array_equal(result.labels, label(whole, background=0, connectivity=1))
    assert result.labels.max() < label(noisy, background=0, connectivity=1).max() / 2  # the specks are gone




def test_a_majority_radius_half_way_between_voxels_rounds_up():
    # the README: on 50 nm sections R below 25 nm filters in-plane only, so R = 25 nm reaches one section each side;
    # Python's round() sends halves to the even number (25 / 50 -> 0 sections, 125 / 50 -> 2, but 75 / 50 -> 2)
    assert Cleanup(majority_nm=25.0).majority_radius((50.0, 4.6, 4.6)) == (1, 5, 5)
    assert Cleanup(majority_nm=24.9).majority_radius((50.0, 4.6, 4.6)) == (0, 5, 5)
    assert Cleanup(majority_nm=125.0).majority_radius((50.0, 4.6, 4.6)) == (3, 27, 27)
    assert Cleanup(majority_nm=11.5).majority_radius((50.0, 4.6, 4.6)) == (0, 3, 3)  # 2.5 pixels, in floating point a hair below
    classes = smooth_classes(seed=6)[:6, :8, :9]
    result = make_instances(classes, majority_nm=5.0, voxel_size=(10.0, 4.0, 4.0), block_shape=(2, 3, 4))
    np.testing.assert_array_equal(result.labels, label(majority_filter(classes, (1, 1, 1)), background=0, connectivity=1))

def test_a_majority_box_wider_than_the_volume_counts_it_whole_and_is_warned_about():
    classes = smooth_classes(seed=6)[:6, :8, :9]
    # any half-width of at least the array's side counts the whole axis, without allocating it
    np.testing.assert_array_equal(majority_filter(classes, (10**9, 10**9, 10**9)), majority_filter(classes, (6, 8, 9)))
    values, counts = np.unique(classes, return_counts=True)
    assert np.sort(counts)[-1] > np.sort(counts)[-2]  # one class is the most frequent: every voxel takes it
    assert np.all(majority_filter(classes, (6, 8, 9)) == values[counts.argmax()])
    with pytest.warns(OrgasegWarning, match="the majority box .* is wider than the volume in y and x"):
        result = make_instances(classes, majority_nm=1e9, voxel_size=(8.0, 4.0, 4.0))
    assert result.labels.max() <= 1

def test_written_volume_has_pyramid_classes_and_provenance(tmp_path):
    labels, _ = balls(shape=(8, 300, 260), n=(5, 5), seed=2)
    named = write_labels(tmp_path / "named.ome.zarr", labels, voxel_size=(40, 5, 5), provenance={}, label_names=NAMES)
    result = make_instances(named, tmp_path / "inst.ome.zarr", block_shape=(4, 128, 128))
    stored = open_volume(result.path)
    assert stored.read().max() == 10
    assert stored.voxel_size == (40.0, 5.0, 5.0)
    np.testing.assert_array_equal(stored.read(), make_instances(labels).labels)
    attrs = json.loads((result.path / "labels" / "instances" / ".zattrs").read_text())
    assert len(attrs["multiscales"][0]["datasets"]) >= 2  # a pyramid
    names = read_label_names(stored)
    assert names[0] == "background" and [names[i] for i in range(1, 11)] == result.classes
    assert sorted(set(result.classes)) == ["granules", "mitochondria"]
    record = json.loads((tmp_path / "inst.ome.zarr.provenance.json").read_text())
    assert record["counts"] == {"mitochondria": 5, "granules": 5} and record["connectivity"] == 6
    tiff = make_instances(named, tmp_path / "inst.tif")
    np.testing.assert_array_equal(open_volume(tiff.path).read(), stored.read())
    with pytest.warns(OrgasegWarning, match="already the output of orgaseg instances") as caught:
        make_instances(result.path)  # instances of instances: each object would become a class
    warning = next(w.message for w in caught if "already the output" in str(w.message))
    assert str(warning).endswith("give the named labels (name_clusters) or the segmentation instead")
    assert warning.for_command_line().endswith("give the named labels (orgaseg name) or the segmentation instead")


def test_instances_of_a_segmentation_say_that_cluster_0_is_not_numbered_unless_chosen(tmp_path):
    # a segmentation's ids are clusters without names: every non-zero value is a class, so cluster 0, a cluster
    # like the others (a sixth of the voxels, say the membranes), would be dropped without a word
    labels, _ = balls(shape=(6, 20, 20), n=(1, 1))
    clusters = write_labels(tmp_path / "seg.ome.zarr", labels, voxel_size=(10, 5, 5),
                            provenance={"clusterer": {"name": "kmeans"}})
    cluster_0 = r"seg\.ome\.zarr is the output of orgaseg segment: .*cluster 0.* not numbered; name the clusters first "
    with pytest.warns(OrgasegWarning, match=cluster_0 + r".*classes=\[\.\.\.\] \(0 included\)") as caught:
        without = make_instances(clusters)
    warning = next(w.message for w in caught if "cluster 0" in str(w.message))
    assert "name the clusters first with orgaseg.organelles.name_clusters, or" in str(warning)
    assert "name the clusters first with 'orgaseg name', or choose" in warning.for_command_line()
    assert set(without.classes) == {"1", "2"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrgasegWarning)  # the clusters chosen: nothing goes unsaid
        chosen = make_instances(clusters, classes=[0, 1, 2])
    assert "0" in chosen.classes and chosen.labels.max() > without.labels.max()


def test_bad_inputs_give_clear_errors(tmp_path):
    labels, _ = balls(shape=(6, 20, 20), n=(1, 1))
    named = write_labels(tmp_path / "named.ome.zarr", labels, voxel_size=(10, 5, 5), provenance={}, label_names=NAMES)
    output = tmp_path / "out.ome.zarr"
    make_instances(named, output)
    before = open_volume(output).read()
    with pytest.raises(OrgasegError, match="exists; pass overwrite=True"):
        make_instances(named, output, classes=["granules"])
    np.testing.assert_array_equal(open_volume(output).read(), before)  # untouched
    make_instances(named, output, classes=["granules"], overwrite=True)
    assert open_volume(output).read().max() == 1
    with pytest.raises(OrgasegError, match="no class 'golgi'.*mitochondria \\(1\\)"):
        make_instances(named, classes=["golgi"])
    # Fiji saves label images as 32-bit floats: whole numbers read as the labels they are, fractions are refused
    np.testing.assert_array_equal(make_instances(labels.astype(np.float32)).labels, make_instances(labels).labels)
    with pytest.raises(OrgasegError, match="must hold integer labels; its float32 values include 0.5"):
        make_instances(labels.astype(np.float32) / 2)
    # a signed volume's -1 (missing data) was counted as a class of its own
    with pytest.raises(OrgasegError, match="holds the negative value -1: labels are 0 .background. or more"):
        make_instances(np.where(labels == 0, -1, labels.astype(np.int16)))
    with pytest.raises(OrgasegError, match="voxel_size"):
        make_instances(labels, min_size_nm3=100.0)
    with pytest.raises(OrgasegError, match="min_size_nm3 must be a non-negative"):
        make_instances(labels, min_size_nm3=-1.0, voxel_size=(1, 1, 1))
    with pytest.raises(OrgasegError, match="no such file"):
        make_instances(tmp_path / "missing.ome.zarr")
    background = write_labels(tmp_path / "bg.ome.zarr", labels, voxel_size=(10, 5, 5), provenance={},
                              label_names=["unassigned", "background", "unassigned"])
    with pytest.raises(OrgasegError, match="every class is background"):
        make_instances(background)


def test_classes_named_other_or_background_are_counted_only_when_asked(tmp_path):
    labels, _ = balls(n=(3, 4))
    named = write_labels(tmp_path / "named.ome.zarr", labels, voxel_size=(10, 5, 5), provenance={},
                         label_names=["unassigned", "mitochondria", "Other"])
    assert make_instances(named).counts == {"mitochondria": 3}
    assert make_instances(named, classes=["Other"]).counts == {"Other": 4}
    none = write_labels(tmp_path / "none.ome.zarr", np.where(labels == 2, 0, labels), voxel_size=(10, 5, 5),
                        provenance={}, label_names=["unassigned", "mitochondria", "granules"])
    with pytest.warns(OrgasegWarning, match="no instance of granules: no voxel of .*none.ome.zarr carries that class"):
        assert make_instances(none).counts == {"mitochondria": 3, "granules": 0}



def test_a_volume_without_names_and_without_a_class_voxel_is_warned_about():
    # every non-zero value is a class by default: none at all (a blank mask, or every object removed as too
    # small) gave "0 instances (none)" without a word, where a chosen class without voxels is warned about
    with pytest.warns(OrgasegWarning, match=r"no instance: every voxel of <array> is 0 \(background\)$"):
        assert make_instances(np.zeros((2, 6, 6), np.uint8)).counts == {}
    specks = np.zeros((2, 6, 6), np.uint8)
    specks[0, ::2, ::2] = 1
    with pytest.warns(OrgasegWarning, match=r"every voxel of <array> is 0 \(background\) after the clean-up"):
        assert make_instances(specks, voxel_size=(10, 10, 10), min_size_nm3=2000).counts == {}


def test_a_name_that_several_values_carry_selects_and_counts_them_all(tmp_path):
    # an OME-Zarr label image may name several values alike (membrane drawn in four orientations)
    labels = np.zeros((3, 10, 10), np.uint8)
    labels[1, 1:4, 1:4], labels[1, 6:9, 6:9], labels[1, 1:4, 6:9] = 1, 2, 3
    named = write_labels(tmp_path / "named.ome.zarr", labels, voxel_size=(50, 5, 5), provenance={},
                         label_names=["background", "membrane", "membrane", "mitochondria"])
    chosen = make_instances(named, classes=["membrane"])
    assert chosen.counts == {"membrane": 2} and chosen.classes == ["membrane", "membrane"]
    np.testing.assert_array_equal(chosen.labels, label(np.isin(labels, [1, 2]), connectivity=1))
    assert make_instances(named).counts == {"membrane": 2, "mitochondria": 1}

def test_cli_instances(tmp_path, capsys):
    labels, _ = balls(n=(3, 4))
    named = write_labels(tmp_path / "named.ome.zarr", labels, voxel_size=(10, 5, 5), provenance={}, label_names=NAMES)
    output = tmp_path / "inst.ome.zarr"
    args = ["instances", str(named), "-o", str(output), "--min-size-nm3", "1000", "--fill-holes", "--quiet",
            "--block-shape", "8", "32", "32"]
    assert main(args) == 0
    assert "7 instances (mitochondria: 3, granules: 4)" in capsys.readouterr().out
    # classes without names are numbered by value
    write_tiff_image(tmp_path / "classes.tif", labels, voxel_size=(10, 5, 5))
    assert main(["instances", str(tmp_path / "classes.tif"), "-o", str(tmp_path / "c.tif"), "--quiet"]) == 0
    assert "7 instances (class 1: 3, class 2: 4)" in capsys.readouterr().out
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--classes", "mitochondria", "--connectivity", "26"]) == 0
    assert open_volume(output).read().max() == 3
    assert json.loads(Path(f"{output}.provenance.json").read_text())["connectivity"] == 26
    assert main(args + ["--overwrite", "--connectivity", "8"]) == 2
    assert "invalid choice: 8" in capsys.readouterr().err
    with pytest.raises(OrgasegError, match="connectivity must be 6, 18 or 26"):
        make_instances(labels, connectivity=8)


@pytest.mark.skipif(not VNC_MITOCHONDRIA.is_dir(), reason="needs ../shared/data/vnc (the project's shared data)")
def test_vnc_mitochondria_equal_scipy_labels_blockwise():
    from PIL import Image

    slices = [np.asarray(Image.open(path)) for path in sorted(VNC_MITOCHONDRIA.glob("*.png"))]
    mask = np.stack([s if s.dtype == bool else s > 127 for s in slices])[:, :512, :512]  # 1-bit and 8-bit PNGs
    expected, count = ndi.label(mask)
    assert count > 10
    result = make_instances(mask.astype(np.uint8), block_shape=(6, 200, 160))
    np.testing.assert_array_equal(result.labels, expected)


class _Stop(Exception):
    pass


def _stop_after(blocks_written: int, seen: list):
    def progress(description, done, total, **figures):
        seen.append((description, done))
        if description == "instances: writing" and done == blocks_written:
            raise _Stop
    return progress


def test_an_interrupted_run_resumes_without_the_components_passes(tmp_path):
    classes = smooth_classes(seed=8)
    output = tmp_path / "instances.ome.zarr"
    settings = {"min_size_nm3": 40.0, "fill_holes": True, "voxel_size": (1, 1, 1), "block_shape": (8, 32, 32),
                "connectivity": 26}
    expected = make_instances(classes, **settings)
    first: list = []
    with pytest.raises(_Stop):
        make_instances(classes, output, progress=_stop_after(3, first), **settings)
    assert not output.exists() and output.with_name(output.name + ".partial").is_dir()
    assert ("instances: holes", 1) in first  # the clean-up ran, so the stored plan holds its steps

    again: list = []
    result = make_instances(classes, output, progress=lambda d, done, total, **f: again.append((d, done)), **settings)
    assert {description for description, _ in again} == {"instances: writing"}  # the plan was stored
    assert again[0] == ("instances: writing", 4)  # the three written blocks were kept
    assert result.provenance["blocks_resumed"] == {"computed": 9, "skipped": 3}
    np.testing.assert_array_equal(open_volume(output).read(), expected.labels)
    assert result.counts == expected.counts and result.classes == expected.classes
    assert not output.with_name(output.name + ".partial").exists()


def test_a_rerun_with_other_settings_starts_afresh(tmp_path):
    classes = smooth_classes(seed=9)
    output = tmp_path / "instances.tif"
    with pytest.raises(_Stop):
        make_instances(classes, output, block_shape=(8, 32, 32), progress=_stop_after(2, []))
    seen: list = []
    result = make_instances(classes, output, block_shape=(8, 32, 32), connectivity=18,
                            progress=lambda d, done, total, **f: seen.append(d))
    assert "instances: components" in seen
    np.testing.assert_array_equal(open_volume(output).read(), label(classes, background=0, connectivity=2))
    assert result.provenance["blocks_resumed"]["skipped"] == 0


def test_sigkill_while_writing_then_rerun_is_identical(tmp_path):
    import subprocess
    import sys

    classes = smooth_classes(seed=10)
    np.save(tmp_path / "classes.npy", classes)
    output = tmp_path / "instances.ome.zarr"
    script = f"""
import os, signal
import numpy as np
from orgaseg.organelles import make_instances

def progress(description, done, total, **figures):
    if description == "instances: writing" and done == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind

make_instances(np.load({str(tmp_path / "classes.npy")!r}), {str(output)!r}, block_shape=(8, 32, 32), progress=progress)
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert killed.returncode == -9, killed.stderr
    assert not output.exists()
    result = make_instances(classes, output, block_shape=(8, 32, 32))
    assert result.provenance["blocks_resumed"] == {"computed": 9, "skipped": 3}
    np.testing.assert_array_equal(open_volume(output).read(), label(classes, background=0, connectivity=1))
