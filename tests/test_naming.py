"""Naming clusters from clicks or scribbles (``orgaseg name``): votes, outputs, mapping reuse, bad input."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import zarr

from orgaseg.cli import main
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.evaluation import UNMATCHED, confusion_matrix, match_clusters
from orgaseg.io import open_volume, read_provenance
from orgaseg.io.volume import as_volume
from orgaseg.io.writers import write_tiff_image
from orgaseg.organelles import (
    name_clusters,
    points_from_arrays,
    read_points,
    read_scribbles,
)
from orgaseg.organelles.annotations import UNASSIGNED, values_at
from orgaseg.organelles.naming import vote
from orgaseg.synthetic import CLASS_NAMES, make_cell

VOXEL = (20.0, 20.0, 20.0)
CLASSES = CLASS_NAMES[1:]  # the phantom's reference classes (its background, outside the cell, is not one)


@pytest.fixture(scope="module")
def cell():
    return make_cell(shape=(8, 96, 96), voxel_size=VOXEL, seed=0)


def clicks(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``per_class`` voxels drawn at random from each reference class, with the class names."""
    rng = np.random.default_rng(seed)
    coords, names = [], []
    for value, name in enumerate(CLASS_NAMES):
        if value == 0:
            continue
        voxels = np.argwhere(labels == value)
        coords.append(voxels[rng.choice(len(voxels), per_class, replace=False)])
        names += [name] * per_class
    return np.concatenate(coords), names


@pytest.mark.parametrize("per_class, noise", [(1, 0.0), (2, 0.0), (3, 0.0), (3, 0.05)])
@pytest.mark.parametrize("seed", [0, 1])
def test_vote_from_a_few_clicks_recovers_the_merge_mapping(cell, per_class, noise, seed):
    # a segmentation with known answers: the phantom's classes under shuffled cluster ids, a share of
    # voxels given random ids (with 3 clicks a stray one is outvoted; one click may land on noise)
    rng = np.random.default_rng(10 + seed)
    k = len(CLASS_NAMES)
    permutation = rng.permutation(k)
    segmentation = permutation[cell.labels]
    noisy = rng.random(segmentation.shape) < noise
    segmentation[noisy] = rng.integers(0, k, noisy.sum())
    reference = np.where(cell.labels > 0, cell.labels.astype(np.int64) - 1, 255)
    confusion = confusion_matrix(segmentation, reference, n_classes=len(CLASSES))
    merge, strict = match_clusters(confusion, "merge"), match_clusters(confusion, "strict")

    coords, names = clicks(cell.labels, per_class, seed)
    annotations = points_from_arrays(coords, names, shape=segmentation.shape)
    naming = vote(values_at(as_volume(segmentation), annotations.coords), annotations, k)

    # every cluster that stands for a class gets the merge mapping's name; the cluster of the
    # phantom's outside (not a class: merge mode only gives it the class its noise overlaps most)
    # got no click and stays unassigned
    outside = int(permutation[0])
    assert strict[outside] == UNMATCHED and np.count_nonzero(strict != UNMATCHED) == len(CLASSES)
    named = [naming.names[i] for i in naming.cluster_ids]
    assert [n for c, n in enumerate(named) if c != outside] == [CLASSES[m] for c, m in enumerate(merge) if c != outside]
    assert named[outside] == UNASSIGNED


def test_conflicts_are_reported_with_counts():
    segmentation = as_volume(np.zeros((1, 4, 4), np.uint8))
    annotations = points_from_arrays([[0, 0, 0], [0, 1, 1], [0, 2, 2], [0, 3, 3]],
                                     ["mito", "membrane", "mito", "membrane"], shape=(1, 4, 4))
    naming = vote(values_at(segmentation, annotations.coords), annotations, k=2)
    assert naming.mapping() == {0: "mito", 1: UNASSIGNED}  # a tie goes to the name given first
    assert naming.conflicts() == [{"cluster": 0, "votes": {"mito": 2, "membrane": 2}, "chosen": "mito", "tie": True}]
    assert naming.names_without_cluster() == ["membrane"]
    assert "conflict in cluster 0: mito 2, membrane 2" in naming.summary()
    assert "conflict" not in naming.summary(votes=False)
    # a name holding the summary's separators is quoted
    annotations = points_from_arrays([[0, 0, 0], [0, 1, 1]], ["mito, outer", "membrane"], shape=(1, 4, 4))
    naming = vote(np.array([0, 1]), annotations, k=2)
    assert naming.summary() == '0 -> "mito, outer", 1 -> membrane'


def test_points_that_name_one_voxel_twice_are_warned_about():
    # two names on one voxel (a misclick, or sub-voxel clicks rounded together) cancel in the vote and train a
    # refining classifier on contradicting labels; they went unsaid
    with pytest.warns(OrgasegWarning, match=r"clicks: 1 point\(s\) fall on a voxel an earlier point gives another "
                                            r"name, e.g. point 3 \(membrane\) and point 1 \(mito\) at z, y, x = "
                                            r"0, 1, 1 voxels"):
        points_from_arrays([[0, 1, 1], [0, 2, 2], [0, 1.2, 0.9]], ["mito", "mito", "membrane"], shape=(1, 4, 4),
                           source="clicks")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same name twice on a voxel is only a repeated click
        points_from_arrays([[0, 1, 1], [0, 1, 1], [0, 2, 2]], ["mito", "mito", "membrane"], shape=(1, 4, 4))


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, cell):
    """A k-means segmentation written by the command line, with points clicked on its reference."""
    folder = tmp_path_factory.mktemp("naming")
    write_tiff_image(folder / "cell.tif", cell.raw, voxel_size=VOXEL)
    assert main(["segment", str(folder / "cell.tif"), "-k", "5", "-o", str(folder / "seg.ome.zarr"), "--quiet"]) == 0
    coords, names = clicks(cell.labels, 3, seed=0)
    lines = ["z,y,x,name"] + [f"{z},{y},{x},{n}" for (z, y, x), n in zip(coords, names)]
    (folder / "points.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_name_writes_a_named_label_volume_and_its_mapping(segmented, capsys):
    out = segmented / "named.ome.zarr"
    assert main(["name", str(segmented / "seg.ome.zarr"), "--points", str(segmented / "points.csv"),
                 "-o", str(out), "--quiet"]) == 0
    assert "cluster vote: 0 -> " in capsys.readouterr().out
    record = json.loads((segmented / "named.ome.zarr.provenance.json").read_text())
    assert record["names"] == [UNASSIGNED, *CLASSES]
    properties = zarr.open_group(str(out), mode="r")["labels/segmentation"].attrs["image-label"]["properties"]
    assert [p["name"] for p in properties] == record["names"]
    # every voxel carries the name of its cluster
    seg = np.asarray(open_volume(segmented / "seg.ome.zarr").read((slice(None),) * 3))
    named = np.asarray(open_volume(out).read((slice(None),) * 3))
    lookup = np.array([record["names"].index(record["naming"]["mapping"][str(c)]) for c in range(5)])
    np.testing.assert_array_equal(named, lookup[seg])
    # the votes are those of the clicked points
    annotations = read_points(segmented / "points.csv", shape=seg.shape)
    expected = vote(values_at(as_volume(seg), annotations.coords), annotations, 5)
    assert record["naming"]["votes"] == expected.votes.tolist()
    assert record["naming"]["annotations"]["per_name"] == {n: 3 for n in CLASSES}


def test_name_and_instances_record_their_inputs_as_absolute_paths(segmented, monkeypatch):
    # as segment does: a record read from another folder still finds what it was made from
    monkeypatch.chdir(segmented)
    assert main(["name", "seg.ome.zarr", "--points", "points.csv", "-o", "rel_named.ome.zarr", "--quiet"]) == 0
    assert main(["instances", "rel_named.ome.zarr", "-o", "rel_instances.ome.zarr", "--quiet"]) == 0
    named = read_provenance(segmented / "rel_named.ome.zarr")
    assert named["segmentation"] == str((segmented / "seg.ome.zarr").resolve())
    assert read_provenance(segmented / "rel_instances.ome.zarr")["input"] == str(
        (segmented / "rel_named.ome.zarr").resolve())


def test_clicks_given_in_python_without_points_from_arrays_are_refused_saying_how(segmented):
    # a list of clicks passed as points (a CSV path) or as annotations failed deep inside, as a TypeError
    # (expected str, bytes or os.PathLike) or an AttributeError ('list' object has no attribute 'check_fits')
    seg = segmented / "seg.ome.zarr"
    with pytest.raises(OrgasegError, match=r"points: got a list, but points is the path of a CSV of clicks; clicks "
                                           r"in Python .* go in as annotations=points_from_arrays\(coords, names"):
        name_clusters(seg, points=[(0, 10, 10, "nucleus")])
    for given in ([(0, 10, 10, "nucleus")], {"nucleus": [(0, 10, 10)]}, np.zeros((1, 3))):
        with pytest.raises(OrgasegError, match=rf"annotations: got a {type(given).__name__}; make them with "
                                               r"orgaseg.organelles.points_from_arrays"):
            name_clusters(seg, annotations=given)
    # none or two: the message names the four ways, annotations included (it named the command line's three)
    for given in ({}, {"points": segmented / "points.csv", "mapping": seg}):
        with pytest.raises(OrgasegError, match=r"give exactly one of points \(a CSV of clicks\), scribbles \(a label "
                                               r"volume\), annotations \(points_from_arrays"):
            name_clusters(seg, **given)


def test_an_existing_output_is_kept_without_overwrite(segmented, capsys):
    out = segmented / "kept.ome.zarr"
    arguments = ["name", str(segmented / "seg.ome.zarr"), "--points", str(segmented / "points.csv"), "-o", str(out),
                 "--quiet"]
    assert main(arguments) == 0
    before = (segmented / "kept.ome.zarr.provenance.json").read_text()
    assert main(arguments) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (segmented / "kept.ome.zarr.provenance.json").read_text() == before
    assert main(arguments + ["--overwrite"]) == 0


def test_the_mapping_names_a_second_volume_segmented_with_the_same_clusterer(segmented, tmp_path, capsys):
    first = name_clusters(segmented / "seg.ome.zarr", points=segmented / "points.csv", output=tmp_path / "a.ome.zarr")
    other = make_cell(shape=(8, 96, 96), voxel_size=VOXEL, seed=3)
    write_tiff_image(tmp_path / "other.tif", other.raw, voxel_size=VOXEL)
    assert main(["segment", str(tmp_path / "other.tif"), "-o", str(tmp_path / "other.ome.zarr"), "--quiet",
                 "--centers", str(segmented / "seg.ome.zarr.provenance.json")]) == 0
    second = name_clusters(tmp_path / "other.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json",
                           output=tmp_path / "b.ome.zarr")
    assert second.naming.mapping() == first.naming.mapping()
    assert second.provenance["mapping_from"] == str(tmp_path / "a.ome.zarr.provenance.json")
    seg = np.asarray(open_volume(tmp_path / "other.ome.zarr").read((slice(None),) * 3))
    named = np.asarray(open_volume(tmp_path / "b.ome.zarr").read((slice(None),) * 3))
    np.testing.assert_array_equal(named, first.naming.cluster_ids[seg])
    # a segmentation with another clusterer: its ids mean other things
    assert main(["segment", str(tmp_path / "other.tif"), "-k", "4", "-o", str(tmp_path / "k4.ome.zarr"), "--quiet"]) == 0
    centers = segmented / "seg.ome.zarr.provenance.json"
    with pytest.raises(OrgasegError, match=rf"clusters of another clusterer \(K = 5 clusters, this segmentation 4\); "
                                           rf"segment this volume with the same clusterer: orgaseg\.segment\(volume, "
                                           rf"centers={re.escape(repr(str(centers)))}\) \(it brings that "
                                           "segmentation's method") as refused:
        name_clusters(tmp_path / "k4.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json")
    assert f"same clusterer: orgaseg segment VOLUME --centers {centers} (it brings" in refused.value.for_command_line()
    assert main(["segment", str(tmp_path / "other.tif"), "-k", "5", "-o", str(tmp_path / "k5.ome.zarr"), "--quiet"]) == 0
    with pytest.raises(OrgasegError, match=r"another clusterer \(another fit of K = 5\)"):
        name_clusters(tmp_path / "k5.ome.zarr", mapping=tmp_path / "a.ome.zarr.provenance.json")
    # the command line says whose names these are, without the votes of the volume they came from
    assert main(["name", str(tmp_path / "other.ome.zarr"), "--mapping", str(tmp_path / "a.ome.zarr.provenance.json"),
                 "-o", str(tmp_path / "c.ome.zarr"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert f"cluster names, as {tmp_path / 'a.ome.zarr.provenance.json'} gives them: 0 -> " in out.out
    assert "cluster vote" not in out.out and "conflict" not in out.out and "not an option" not in out.err


def test_scribbles_with_a_names_table(segmented, tmp_path, capsys):
    seg = open_volume(segmented / "seg.ome.zarr")
    scribbles = np.zeros(seg.shape, np.uint8)
    scribbles[2, 10:14, 10:12] = 7
    scribbles[5, 60, 60:63] = 3
    (tmp_path / "names.csv").write_text("value,name\n7,resin\n3,cytoplasm\n9,nucleus\n")
    result = name_clusters(segmented / "seg.ome.zarr", scribbles=scribbles, names=tmp_path / "names.csv")
    assert result.names == (UNASSIGNED, "resin", "cytoplasm", "nucleus")
    assert result.provenance["naming"]["annotations"]["per_name"] == {"resin": 8, "cytoplasm": 3, "nucleus": 0}
    ids = np.asarray(seg.read((slice(None),) * 3))
    assert result.naming.mapping()[int(ids[2, 10, 10])] == "resin"
    np.testing.assert_array_equal(result.labels, result.naming.cluster_ids[ids])
    # the same from the command line, the scribbles in a file
    write_tiff_image(tmp_path / "scribbles.tif", scribbles, voxel_size=VOXEL)
    assert main(["name", str(segmented / "seg.ome.zarr"), "--scribbles", str(tmp_path / "scribbles.tif"), "--names",
                 str(tmp_path / "names.csv"), "-o", str(tmp_path / "s.ome.zarr"), "--quiet"]) == 0
    record = json.loads((tmp_path / "s.ome.zarr.provenance.json").read_text())
    assert record["naming"]["mapping"] == {str(c): n for c, n in result.naming.mapping().items()}
    (tmp_path / "short.csv").write_text("value,name\n7,resin\n")
    with pytest.raises(OrgasegError, match=r"value\(s\) 3 are not in the names table"):
        name_clusters(segmented / "seg.ome.zarr", scribbles=scribbles, names=tmp_path / "short.csv")
    with pytest.raises(OrgasegError, match="no annotated voxel"):
        read_scribbles(as_volume(np.zeros(seg.shape, np.uint8)), shape=seg.shape)
    with pytest.raises(OrgasegError, match="differ from the segmentation's"):
        read_scribbles(as_volume(scribbles[:4]), shape=seg.shape)
    # an ImageJ TIFF says its first axis is channels: scribbles are read as z, y, x on SEG's grid, without a
    # warning that the file has no voxel size
    import tifffile

    tifffile.imwrite(tmp_path / "imagej.tif", scribbles, imagej=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_imagej = name_clusters(segmented / "seg.ome.zarr", scribbles=tmp_path / "imagej.tif",
                                    names=tmp_path / "names.csv")
    np.testing.assert_array_equal(from_imagej.labels, result.labels)
    tifffile.imwrite(tmp_path / "float.tif", scribbles.astype(np.float32))  # as Fiji saves a 32-bit label image
    from_float = name_clusters(segmented / "seg.ome.zarr", scribbles=tmp_path / "float.tif", names=tmp_path / "names.csv")
    np.testing.assert_array_equal(from_float.labels, result.labels)
    tifffile.imwrite(tmp_path / "plane.tif", scribbles[2])  # an image is one slice
    with pytest.raises(OrgasegError, match=r"scribbles of shape \(1, 96, 96\) differ from the segmentation's "
                                           r"\(8, 96, 96\)"):
        name_clusters(segmented / "seg.ome.zarr", scribbles=tmp_path / "plane.tif", names=tmp_path / "names.csv")
    # scribbles inside a container with other datasets (ilastik's way): their own key
    import h5py

    with h5py.File(tmp_path / "annotations.h5", "w") as f:
        f["scribbles"] = scribbles
        f["predictions"] = scribbles.astype(np.float32)
    name = ["name", str(segmented / "seg.ome.zarr"), "--scribbles", str(tmp_path / "annotations.h5"), "--names",
            str(tmp_path / "names.csv"), "-o", str(tmp_path / "h5.ome.zarr"), "--quiet"]
    assert main(name) == 2
    err = capsys.readouterr().err
    assert "needs a key; pass --scribbles-key NAME" in err and "not an option" not in err
    assert main([*name, "--scribbles-key", "scribbles"]) == 0
    np.testing.assert_array_equal(open_volume(tmp_path / "h5.ome.zarr").read(), result.labels)
    assert main([*name[:2], "--points", str(tmp_path / "names.csv"), "--scribbles-key", "scribbles", *name[6:]]) == 2
    assert "--scribbles-key NAME names a dataset inside the container of --scribbles LABELS" in capsys.readouterr().err


def test_points_in_nanometres():
    annotations = points_from_arrays([[40.0, 64.0, 18.0]], ["mito"], shape=(4, 8, 8), voxel_size=(20, 10, 10),
                                     units="nm")
    assert annotations.coords.tolist() == [[2, 6, 2]]  # nearest voxel centres
    with pytest.raises(OrgasegError, match="outside the volume"):
        points_from_arrays([[40.0, 64.0, 18.0]], ["mito"], shape=(4, 8, 8), units="voxels")
    with pytest.raises(OrgasegError, match="e.g. point 1 at z, y, x = 400, 64, 18 nm"):  # as given, in nm
        points_from_arrays([[400.0, 64.0, 18.0]], ["mito"], shape=(4, 8, 8), voxel_size=(20, 10, 10), units="nm")
    # voxel indices given as nm: every point crowds into the corner as many nm wide as the volume has voxels
    voxels = [[3.0, 7.0, 2.0], [1.0, 5.0, 6.0]]
    with pytest.warns(OrgasegWarning, match="are they voxel indices\\? then leave out units='nm'"):
        in_corner = points_from_arrays(voxels, ["a", "b"], shape=(4, 8, 8), voxel_size=(20, 10, 10), units="nm")
    assert in_corner.coords.tolist() == [[0, 1, 0], [0, 0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # points spread over the volume, or an axis of 1 nm voxels, say nothing
        points_from_arrays([[3.0, 70.0, 2.0], [1.0, 5.0, 6.0]], ["a", "b"], shape=(4, 8, 8), voxel_size=(20, 10, 10),
                           units="nm")
        points_from_arrays(voxels, ["a", "b"], shape=(4, 8, 8), voxel_size=(1, 1, 1), units="nm")



def test_points_in_nanometres_name_a_segmentation_without_a_place(segmented, cell, tmp_path, capsys):
    # the segmentation of a TIFF has no translation: nm are counted from its first voxel (the README's
    # "orgaseg name cell_labels.ome.zarr --points clicks_nm.csv --units nm"), the same clicks as in voxels
    coords, names = clicks(cell.labels, 3, seed=0)  # the clicks of segmented / "points.csv"
    lines = ["z,y,x,name"] + [f"{z * VOXEL[0]},{y * VOXEL[1]},{x * VOXEL[2]},{n}" for (z, y, x), n in zip(coords, names)]
    (tmp_path / "nm.csv").write_text("\n".join(lines) + "\n")
    seg = segmented / "seg.ome.zarr"
    in_nm = name_clusters(seg, points=tmp_path / "nm.csv", units="nm")
    in_voxels = name_clusters(seg, points=segmented / "points.csv")
    assert in_nm.naming.to_dict()["mapping"] == in_voxels.naming.to_dict()["mapping"]
    np.testing.assert_array_equal(in_nm.labels, in_voxels.labels)
    (tmp_path / "far.csv").write_text(f"z,y,x,name\n0,0,0,a\n{100 * VOXEL[0]},0,0,b\n")
    assert main(["name", str(seg), "--points", str(tmp_path / "far.csv"), "--units", "nm", "-o",
                 str(tmp_path / "far.ome.zarr"), "--quiet"]) == 2
    assert "1 point(s) lie outside the volume" in capsys.readouterr().err
    # a segmentation of a volume of unknown voxel size cannot place nm (they were divided by an assumed 1 nm)
    np.save(tmp_path / "unknown.npy", cell.raw)
    assert main(["segment", str(tmp_path / "unknown.npy"), "-k", "3", "-o", str(tmp_path / "u.ome.zarr"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["name", str(tmp_path / "u.ome.zarr"), "--points", str(tmp_path / "nm.csv"), "--units", "nm", "-o",
                 str(tmp_path / "u_named.ome.zarr"), "--quiet"]) == 2
    assert ("u.ome.zarr: its voxel size is unknown (it stores none, as the volume segmented had none), so points in "
            "nm cannot be placed: give them in voxels, or segment again with --voxel-size" in capsys.readouterr().err)


def test_points_saved_by_napari_are_read_as_z_y_x_with_their_name_feature(segmented, cell, tmp_path, capsys):
    pytest.importorskip("napari")
    import npe2
    from napari.layers import Points

    npe2.PluginManager.instance().discover()  # napari's own writers, as a viewer registers them
    coords, names = clicks(cell.labels, 3, seed=0)  # the clicks of segmented / "points.csv"
    layer = Points(coords.astype(float), features={"name": names, "confidence": np.linspace(0, 1, len(names))})
    assert layer.save(str(tmp_path / "napari.csv"), plugin="napari") == [str(tmp_path / "napari.csv")]
    assert (tmp_path / "napari.csv").read_text().splitlines()[0] == "index,axis-0,axis-1,axis-2,name,confidence"
    shape = open_volume(segmented / "seg.ome.zarr").shape
    saved, written = read_points(tmp_path / "napari.csv", shape=shape), read_points(segmented / "points.csv", shape=shape)
    np.testing.assert_array_equal(saved.coords, written.coords)
    np.testing.assert_array_equal(saved.labels, written.labels)
    assert saved.names == written.names == CLASSES
    assert main(["name", str(segmented / "seg.ome.zarr"), "--points", str(tmp_path / "napari.csv"),
                 "-o", str(tmp_path / "named.ome.zarr"), "--quiet"]) == 0
    record = json.loads((tmp_path / "named.ome.zarr.provenance.json").read_text())
    assert record["naming"]["annotations"]["per_name"] == {n: 3 for n in CLASSES}
    layer.features.drop(columns="name", inplace=True)
    layer.save(str(tmp_path / "unnamed.csv"), plugin="napari")
    with pytest.raises(OrgasegError, match=r"napari points without a 'name' column.*layer.features\['name'\]"):
        read_points(tmp_path / "unnamed.csv", shape=shape)


def test_points_in_napari_layout_written_by_hand(tmp_path):
    (tmp_path / "clicks.csv").write_text('name,axis-2,axis-1,axis-0,index\nmito,3,2.4,1,0\n"er, rough",0,1,2.6,1\n')
    annotations = read_points(tmp_path / "clicks.csv", shape=(4, 8, 8))
    assert annotations.coords.tolist() == [[1, 2, 3], [3, 1, 0]]
    assert annotations.names == ("mito", "er, rough") and annotations.labels.tolist() == [0, 1]
    (tmp_path / "nm.csv").write_text("axis-0,axis-1,axis-2,name\n40,64,18,mito\n")
    in_nm = read_points(tmp_path / "nm.csv", shape=(4, 8, 8), voxel_size=(20, 10, 10), units="nm")
    assert in_nm.coords.tolist() == [[2, 6, 2]]


def test_points_of_a_2d_image_need_no_z_column(tmp_path):
    (tmp_path / "clicks.csv").write_text("x,y,name\n3,2,mito\n7,5,er\n")
    annotations = read_points(tmp_path / "clicks.csv", shape=(1, 8, 8))
    assert annotations.coords.tolist() == [[0, 2, 3], [0, 5, 7]] and annotations.names == ("mito", "er")
    with pytest.raises(OrgasegError, match="points without a z column fit a segmentation of one slice; this one has 4"):
        read_points(tmp_path / "clicks.csv", shape=(4, 8, 8))


def test_napari_points_over_a_2d_image_are_its_y_and_x(tmp_path):
    # a 2D image opened in napari gets a 2D points layer: saved as index,axis-0,axis-1,name
    (tmp_path / "clicks.csv").write_text("index,axis-0,axis-1,name\n0,2,3,mito\n1,5,7,er\n")
    annotations = read_points(tmp_path / "clicks.csv", shape=(1, 8, 8))
    assert annotations.coords.tolist() == [[0, 2, 3], [0, 5, 7]] and annotations.names == ("mito", "er")
    (tmp_path / "nm.csv").write_text("index,axis-0,axis-1,name\n0,20,31,mito\n")
    in_nm = read_points(tmp_path / "nm.csv", shape=(1, 8, 8), voxel_size=(50, 5, 5), units="nm")
    assert in_nm.coords.tolist() == [[0, 4, 6]]
    with pytest.raises(OrgasegError, match=r"napari points with the coordinate column\(s\) axis-0, axis-1; orgaseg "
                                           r"reads 3D points"):
        read_points(tmp_path / "clicks.csv", shape=(4, 8, 8))  # over a stack, 2D points say no section


def test_points_measured_in_fiji_are_told_that_its_slice_column_counts_from_1(tmp_path):
    # Fiji's Analyze > Measure of a multi-point selection on a stack: a row number, X, Y and Slice (from 1)
    (tmp_path / "fiji.csv").write_text(" ,X,Y,Slice,name\n1,3,2,1,mito\n2,7,5,4,er\n")
    with pytest.raises(OrgasegError, match=r"fiji\.csv: no column z; Fiji's Slice column counts slices from 1: add a "
                                           r"column z holding Slice - 1 \(and check that X and Y are pixels"):
        read_points(tmp_path / "fiji.csv", shape=(4, 8, 8))
    (tmp_path / "fixed.csv").write_text(" ,X,Y,Slice,z,name\n1,3,2,1,0,mito\n2,7,5,4,3,er\n")
    assert read_points(tmp_path / "fixed.csv", shape=(4, 8, 8)).coords.tolist() == [[0, 2, 3], [3, 5, 7]]


def test_columns_beside_the_points_are_ignored(tmp_path):
    """A spreadsheet's comment or id column, as napari's features, is not a reason to refuse the clicks."""
    (tmp_path / "3d.csv").write_text("id,z,y,x,name,comment\n7,1,2,3,mito,first one\n8,0,5,6,er,\n")
    annotations = read_points(tmp_path / "3d.csv", shape=(4, 8, 8))
    assert annotations.coords.tolist() == [[1, 2, 3], [0, 5, 6]] and annotations.names == ("mito", "er")
    (tmp_path / "2d.csv").write_text("y,x,name,area\n2,3,mito,12.5\n")
    assert read_points(tmp_path / "2d.csv", shape=(1, 8, 8)).coords.tolist() == [[0, 2, 3]]


@pytest.mark.parametrize("text, message", [
    ("z,y,x,label\n1,2,3,mito\n", ("missing column(s) name; expected the header z,y,x,name (or napari's "
                                   "index,axis-0,axis-1,axis-2,name)")),
    ("z,y,x,name,name\n1,2,3,mito,er\n", "column(s) 'name' named twice"),
    ("index,axis-0,axis-1,axis-2\n0,1,2,3\n", "napari points without a 'name' column"),
    ("index,axis-0,axis-1,name\n0,2,3,mito\n", "napari points with the coordinate column(s) axis-0, axis-1;"),
    ("axis-0,axis-1,axis-2,axis-3,name\n0,1,2,3,mito\n", "coordinate column(s) axis-0, axis-1, axis-2, axis-3;"),
    ("index,axis-0,axis-1,axis-2,name\n0,1,two,3,mito\n", "line 2: axis-0, axis-1, axis-2 must be numbers"),
    ("z,y,name\n1,2,mito\n", "missing column(s) x"),
    ("z,y,x,name\n", "no annotations (only a header)"),
    ("", "empty file"),
    ("z,y,x,name\n1,2,300,mito\n", "1 point(s) lie outside the volume (8 x 96 x 96 voxels)"),
    ("z,y,x,name\n1,2,-1,mito\n", "lie outside the volume"),
    ("z,y,x,name\n1,two,3,mito\n", "line 2: z, y, x must be numbers"),
    ("z,y,x,name\n1,2,3\n", "line 2: 3 fields, expected 4"),
    ("z,y,x,name\n1,2,3, \n", "have no name"),
    ("z,y,x,name\n1,2,3,Unassigned\n", "'Unassigned' is a name orgaseg keeps for the clusters no annotation names"),
    ("z,y,x,name\n1,2,3,all\n", "'all' is a name orgaseg keeps for the total row of measure's summary"),
])
def test_bad_points_get_clear_errors(segmented, tmp_path, text, message):
    (tmp_path / "points.csv").write_text(text)
    with pytest.raises(OrgasegError) as error:
        name_clusters(segmented / "seg.ome.zarr", points=tmp_path / "points.csv")
    assert message in str(error.value)


def test_points_outside_suggest_nanometres_only_where_that_can_be_the_reason(segmented, tmp_path, capsys):
    seg = str(segmented / "seg.ome.zarr")
    (tmp_path / "large.csv").write_text("z,y,x,name\n1,2,300,mito\n")
    (tmp_path / "negative.csv").write_text("z,y,x,name\n1,2,-1,mito\n")
    with pytest.raises(OrgasegError, match=r"are they in nanometres\? then say units='nm'"):
        name_clusters(seg, points=tmp_path / "large.csv")
    with pytest.raises(OrgasegError) as error:
        name_clusters(seg, points=tmp_path / "negative.csv")
    assert str(error.value).endswith("e.g. point 1 at z, y, x = 1, 2, -1 voxels")
    assert main(["name", seg, "--points", str(tmp_path / "large.csv"), "-o", str(tmp_path / "n.ome.zarr")]) == 2
    assert "then say --units nm" in capsys.readouterr().err
    # counted from 1 (Fiji's slice numbers), or x, y, z under a z,y,x header: said so, not nanometres
    (tmp_path / "from_one.csv").write_text("z,y,x,name\n8,2,3,mito\n1,96,5,er\n")
    with pytest.raises(OrgasegError, match=r"are they counted from 1 \(as Fiji numbers slices\)\? voxel indices "
                                           r"start at 0: subtract 1$"):
        name_clusters(seg, points=tmp_path / "from_one.csv")
    (tmp_path / "swapped.csv").write_text("z,y,x,name\n50,2,3,mito\n0,90,1,er\n")
    with pytest.raises(OrgasegError, match=r"are the columns x, y, z\? the header says which column is which"):
        name_clusters(seg, points=tmp_path / "swapped.csv")


def test_bad_arguments_get_clear_errors(segmented, tmp_path, capsys):
    seg = str(segmented / "seg.ome.zarr")
    with pytest.raises(OrgasegError, match="exactly one of points"):
        name_clusters(seg)
    with pytest.raises(OrgasegError, match="no provenance record beside it"):
        name_clusters(segmented / "cell.tif", points=segmented / "points.csv")
    with pytest.raises(OrgasegError, match="no such file"):
        name_clusters(seg, points=tmp_path / "missing.csv")
    with pytest.raises(OrgasegError, match="not the provenance of a named output"):
        name_clusters(seg, mapping=segmented / "seg.ome.zarr.provenance.json")
    with pytest.raises(OrgasegError, match="classifier=NAME takes effect only with refine=True"):
        name_clusters(seg, points=segmented / "points.csv", classifier="mlp")
    with pytest.raises(OrgasegError, match="unknown classifier 'svm'"):
        name_clusters(seg, points=segmented / "points.csv", refine=True, classifier="svm")
    # numpy's "expected non-negative integer" from the refining classifier, pathlib's TypeError for an array
    with pytest.raises(OrgasegError, match="seed=N must be a whole number >= 0, got -1"):
        name_clusters(seg, points=segmented / "points.csv", refine=True, seed=-1)
    labels = open_volume(seg).read()
    with pytest.raises(OrgasegError, match="give its path or the Segmentation it returned, got ndarray"):
        name_clusters(labels, points=segmented / "points.csv")
    # units were not checked, and were ignored without points
    with pytest.raises(OrgasegError, match="unknown units 'um'; choose one of voxels, nm"):
        name_clusters(seg, points=segmented / "points.csv", units="um")
    clicks = read_points(segmented / "points.csv", shape=labels.shape)
    with pytest.raises(OrgasegError, match="units='nm' is the unit of a points CSV's coordinates and takes effect "
                                           "only with points, not with annotations"):
        name_clusters(seg, annotations=clicks, units="nm")
    (tmp_path / "one.csv").write_text("z,y,x,name\n1,2,3,mito\n")
    with pytest.raises(OrgasegError, match="at least two names"):
        name_clusters(seg, points=tmp_path / "one.csv", refine=True)
    assert main(["name", seg, "--points", str(tmp_path / "one.csv"), "--mapping", "x.json", "-o", "y.ome.zarr"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--classifier", "mlp"], "--classifier NAME takes effect only with --refine"),
    (["--z-context", "--context", "none"], "--context SIZES and --z-context take effect only with --refine"),
    (["--raw", "cell.tif"], "--raw VOLUME takes effect only with --refine"),
    (["--feature-memory", "0"], "--feature-memory SIZE takes effect only with --refine"),
    (["--device", "cpu"], "--device NAME takes effect only with --refine"),
    (["--workers", "2"], "--workers, --threads-per-worker, --executor and --scheduler take effect only with --refine"),
])
def test_refine_options_without_refine_are_refused_not_ignored(segmented, tmp_path, capsys, extra, message):
    out = tmp_path / "named.ome.zarr"
    assert main(["name", str(segmented / "seg.ome.zarr"), "--points", str(segmented / "points.csv"), "-o", str(out),
                 *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_training_options_cannot_apply_to_a_reused_mapping(segmented, tmp_path, capsys):
    assert main(["name", str(segmented / "seg.ome.zarr"), "--mapping", "from.provenance.json", "--refine",
                 "--classifier", "forest", "-o", str(tmp_path / "named.ome.zarr")]) == 2
    assert "--classifier NAME cannot apply to --mapping PATH" in capsys.readouterr().err


def test_annotations_for_a_volume_of_another_shape_are_refused(segmented, cell):
    from orgaseg.organelles import name_clusters, points_from_arrays

    segmentation = segmented / "seg.ome.zarr"
    clicks = points_from_arrays([[1, 5, 5], [1, 60, 60]], ["a", "b"], shape=(8, 64, 64))  # made for another volume
    with pytest.raises(OrgasegError, match=r"read for a volume of 8 x 64 x 64 voxels, but .* has 8 x 96 x 96"):
        name_clusters(segmentation, annotations=clicks)
    fitting = points_from_arrays([[1, 5, 5], [1, 70, 70]], ["a", "b"], shape=cell.raw.shape)
    assert set(name_clusters(segmentation, annotations=fitting).naming.names) == {"unassigned", "a", "b"}


def test_naming_a_crop_of_an_image_says_to_segment_it_first(cell, tmp_path):
    from orgaseg.io import write_tiff_image
    from orgaseg.io.crop import crop_volume, parse_region
    from orgaseg.organelles import name_clusters

    raw = write_tiff_image(tmp_path / "raw.tif", cell.raw, voxel_size=VOXEL)
    crop = crop_volume(open_volume(raw), parse_region(["0:4", ":", ":"], cell.raw.shape), tmp_path / "crop.ome.zarr")
    with pytest.raises(OrgasegError, match=r"is a crop of an image \('orgaseg crop'\), not a segmentation") as refused:
        name_clusters(crop, points=tmp_path / "points.csv")
    assert str(refused.value).endswith("segment it first (orgaseg.segment) and name the segmentation's clusters")
    assert refused.value.for_command_line().endswith("segment it first ('orgaseg segment') and name the "
                                                     "segmentation's clusters")


def test_z_context_on_a_single_image_is_warned_about(cell, tmp_path):
    # a single image has no adjacent slices: --z-context would only double its features
    write_tiff_image(tmp_path / "image.tif", cell.raw[4:5], voxel_size=VOXEL)
    assert main(["segment", str(tmp_path / "image.tif"), "-k", "4", "-o", str(tmp_path / "seg.ome.zarr"),
                 "--quiet"]) == 0
    coords, names = clicks(cell.labels[4:5], 3, seed=0)
    (tmp_path / "clicks.csv").write_text("y,x,name\n" + "".join(f"{y},{x},{n}\n" for (_, y, x), n in zip(coords, names)))
    with pytest.warns(OrgasegWarning, match=r"seg.ome.zarr is a single image: it has no adjacent slices, so "
                                            r".*z_context.* appends a copy of every voxel's own features"):
        name_clusters(tmp_path / "seg.ome.zarr", points=tmp_path / "clicks.csv", refine=True, z_context=True)
