"""The evaluation protocol: confusion matrix, matching, scores and reports, checked by hand."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
import tifffile
from matplotlib import colormaps
from PIL import Image

from orgaseg.cli import main
from orgaseg.datasets import CLASS_MAPS
from orgaseg.errors import OrgasegError, render
from orgaseg.evaluation import (
    UNMATCHED,
    ClassMap,
    ConfusionAccumulator,
    EvaluationReport,
    confusion_matrix,
    dice_matrix,
    evaluate,
    match_clusters,
    parse_class_map,
    scores_from_confusion,
)
from orgaseg.evaluation.classmap import reference_classes
from orgaseg.evaluation.confusion import MAX_ID
from orgaseg.io.volume import as_volume

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Example A, K = 3 > C = 2, written out by hand.
#   reference  0 0 0 0 0 0 1 1 1 1
#   prediction 0 0 0 0 2 2 1 1 1 0
# M = [[4, 1],     cluster 0: 4 of class 0, 1 of class 1
#      [0, 3],     cluster 1: 3 of class 1
#      [2, 0]]     cluster 2: 2 of class 0
# Row sums 5, 3, 2; column sums 6, 4.
# D = [[8/11, 2/9], [0, 6/7], [4/8, 0]]; Hungarian: 0 -> bg, 1 -> mito (8/11 + 6/7 beats 1/2 + 6/7).
# strict: cluster 2 predicts nothing.
#   bg:   TP 4, FP 1, FN 2 -> Dice 8/11, IoU 4/7, sens 4/6, prec 4/5
#   mito: TP 3, FP 0, FN 1 -> Dice 6/7, IoU 3/4, sens 3/4, prec 1
#   accuracy 7/10
# merge: cluster 2 joins bg (2 > 0 voxels).
#   bg:   TP 6, FP 1, FN 0 -> Dice 12/13, IoU 6/7, sens 1, prec 6/7
#   mito: as in strict
#   accuracy 9/10
REF_A = np.array([[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]])
PRED_A = np.array([[0, 0, 0, 0, 2, 2, 1, 1, 1, 0]])

# Example B, K = 2 < C = 3.
#   reference  0 0 0 1 1 2
#   prediction 0 0 0 1 1 1
# M = [[3, 0, 0], [0, 2, 1]]; D[1] = [0, 4/5, 2/4]: cluster 1 -> b, class c gets no cluster.
#   a: Dice 1; b: TP 2, FP 1, FN 0 -> Dice 4/5, IoU 2/3, sens 1, prec 2/3; c: all 0.
#   mean Dice (1 + 4/5 + 0) / 3 = 0.6; organelles (b, c): 0.4; accuracy 5/6. Merge == strict.
REF_B = np.array([[0, 0, 0, 1, 1, 2]])
PRED_B = np.array([[0, 0, 0, 1, 1, 1]])


def test_confusion_matrix_example_a():
    expected = np.array([[4, 1], [0, 3], [2, 0]])
    result = confusion_matrix(PRED_A, REF_A)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)


def test_dice_matrix_example_a():
    np.testing.assert_allclose(
        dice_matrix(confusion_matrix(PRED_A, REF_A)), [[8 / 11, 2 / 9], [0, 6 / 7], [0.5, 0]]
    )
    # An all-zero row and column (denominator 0) give Dice 0, not NaN.
    np.testing.assert_array_equal(dice_matrix(np.array([[0, 0], [0, 3]])), [[0, 0], [0, 1]])
    # a 1D matrix failed with numpy's "axis 1 is out of bounds for array of dimension 1"
    for function in (dice_matrix, match_clusters):
        with pytest.raises(OrgasegError, match=r"a confusion matrix must be 2D \(clusters x classes\), got shape \(3,\)"):
            function(np.arange(3))


def test_class_names_as_one_string_are_refused_and_one_ignored_value_is_taken():
    # one string as the class names was scored as one class per letter; ignore=5 failed as "'int' object is not
    # iterable"
    with pytest.raises(OrgasegError, match=r"classes is a sequence of names, .* got the string 'ab'"):
        evaluate(PRED_A, REF_A, classes="ab")
    one = evaluate(PRED_A, REF_A, classes=["bg", "mito"], ignore=5).to_dict()
    assert one == evaluate(PRED_A, REF_A, classes=["bg", "mito"], ignore=[5]).to_dict()


def test_example_a_strict_leaves_extra_cluster_unmatched():
    scores = scores_from_confusion(confusion_matrix(PRED_A, REF_A), ["bg", "mito"], mode="strict")
    assert scores["mapping"] == {"0": "bg", "1": "mito", "2": None}
    bg, mito = scores["per_class"]["bg"], scores["per_class"]["mito"]
    assert bg == pytest.approx({"dice": 8 / 11, "iou": 4 / 7, "sensitivity": 4 / 6, "precision": 4 / 5})
    assert mito == pytest.approx({"dice": 6 / 7, "iou": 3 / 4, "sensitivity": 3 / 4, "precision": 1.0})
    assert scores["accuracy"] == pytest.approx(0.7)
    assert scores["mean_dice"] == pytest.approx((8 / 11 + 6 / 7) / 2)
    assert scores["mean_dice_organelles"] == pytest.approx(6 / 7)


def test_example_a_merge_joins_extra_cluster_to_majority_class():
    scores = scores_from_confusion(confusion_matrix(PRED_A, REF_A), ["bg", "mito"], mode="merge")
    assert scores["mapping"] == {"0": "bg", "1": "mito", "2": "bg"}
    bg = scores["per_class"]["bg"]
    assert bg == pytest.approx({"dice": 12 / 13, "iou": 6 / 7, "sensitivity": 1.0, "precision": 6 / 7})
    assert scores["per_class"]["mito"]["dice"] == pytest.approx(6 / 7)
    assert scores["accuracy"] == pytest.approx(0.9)
    assert scores["mean_dice"] == pytest.approx((12 / 13 + 6 / 7) / 2)


def test_example_b_fewer_clusters_than_classes():
    report = evaluate(PRED_B, REF_B, classes=["a", "b", "c"])
    for mode in ("merge", "strict"):
        scores = report.results[mode]
        assert scores["mapping"] == {"0": "a", "1": "b"}
        assert scores["per_class"]["a"]["dice"] == pytest.approx(1.0)
        assert scores["per_class"]["b"] == pytest.approx(
            {"dice": 0.8, "iou": 2 / 3, "sensitivity": 1.0, "precision": 2 / 3}
        )
        # No cluster predicts c: every metric 0, and it counts in the means.
        assert scores["per_class"]["c"] == {"dice": 0.0, "iou": 0.0, "sensitivity": 0.0, "precision": 0.0}
        assert scores["mean_dice"] == pytest.approx(0.6)
        assert scores["mean_dice_organelles"] == pytest.approx(0.4)
        assert scores["accuracy"] == pytest.approx(5 / 6)


def test_perfect_and_permuted_clusterings_score_one():
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 4, size=(3, 8, 9))
    permutation = np.array([2, 0, 3, 1])
    for pred, expected_mapping in ((reference, [0, 1, 2, 3]), (permutation[reference], [1, 3, 0, 2])):
        report = evaluate(pred, reference, classes=["c0", "c1", "c2", "c3"])
        for scores in report.results.values():
            assert scores["mapping"] == {str(k): f"c{c}" for k, c in enumerate(expected_mapping)}
            assert all(m["dice"] == 1.0 and m["iou"] == 1.0 for m in scores["per_class"].values())
            assert scores["accuracy"] == 1.0 and scores["mean_dice"] == 1.0


def test_empty_class_is_none_excluded_and_never_matched():
    # Class "b" has no reference voxel. M = [[1, 0, 0], [0, 2, 0], [1, 0, 0]].
    # Were "b" in the assignment, cluster 2 could take it at no cost; it must not.
    # strict: cluster 2 unmatched -> bg TP 1, FN 1: Dice 2/3; a: Dice 1; accuracy 3/4.
    # merge: cluster 2 joins bg -> Dice 1 everywhere, accuracy 1.
    reference = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])
    report = evaluate(pred, reference, classes=["bg", "a", "b"])
    assert report.empty_classes == ["b"]
    strict, merge = report.results["strict"], report.results["merge"]
    assert strict["mapping"] == {"0": "bg", "1": "a", "2": None}
    assert merge["mapping"] == {"0": "bg", "1": "a", "2": "bg"}
    for scores in (strict, merge):
        assert scores["per_class"]["b"] == {"dice": None, "iou": None, "sensitivity": None, "precision": None}
        assert scores["mean_dice_organelles"] == pytest.approx(1.0)  # only "a" counts
    assert strict["per_class"]["bg"]["dice"] == pytest.approx(2 / 3)
    assert strict["mean_dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert strict["accuracy"] == pytest.approx(0.75)
    assert merge["mean_dice"] == pytest.approx(1.0) and merge["accuracy"] == pytest.approx(1.0)
    assert json.loads(json.dumps(report.to_dict()))["merge"]["per_class"]["b"]["dice"] is None


def test_ignore_label_and_mask_exclude_voxels():
    # Example A with voxel 1 (class 0, cluster 0) ignored and voxel 9 (class 1, cluster 0) masked out:
    # M = [[3, 0], [0, 3], [2, 0]] -> strict bg: TP 3, FN 2, FP 0: Dice 6/8; mito Dice 1; accuracy 6/8.
    reference = REF_A.copy()
    reference[0, 1] = 255
    mask = np.ones_like(REF_A)
    mask[0, 9] = 0
    np.testing.assert_array_equal(confusion_matrix(PRED_A, reference, mask=mask), [[3, 0], [0, 3], [2, 0]])
    report = evaluate(PRED_A, reference, mask=mask, classes=["bg", "mito"])
    assert report.n_voxels == 8
    strict = report.results["strict"]
    assert strict["per_class"]["bg"]["dice"] == pytest.approx(6 / 8)
    assert strict["per_class"]["mito"]["dice"] == pytest.approx(1.0)
    assert strict["accuracy"] == pytest.approx(6 / 8)
    assert report.results["merge"]["accuracy"] == pytest.approx(1.0)
    # Another ignore value: 1 is ignored, 255 becomes an error only if counted.
    np.testing.assert_array_equal(confusion_matrix(PRED_A, REF_A, ignore=(1,)), [[4], [0], [2]])


def test_k_counts_clusters_seen_only_in_ignored_voxels():
    reference = np.array([[0, 1, 255]])
    pred = np.array([[0, 1, 4]])
    result = confusion_matrix(pred, reference)
    assert result.shape == (5, 2)
    assert result.sum() == 2


@pytest.mark.parametrize("block_shape", [(1, 1, 1), (2, 3, 4), (5, 1, 11), (7, 9, 11), (64, 64, 64)])
def test_blockwise_equals_whole_volume(block_shape):
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 5, size=(7, 9, 11), dtype=np.uint8)
    reference = rng.integers(0, 4, size=(7, 9, 11)).astype(np.uint8)
    reference[rng.random(reference.shape) < 0.1] = 255
    mask = rng.random(reference.shape) > 0.2
    counted = (reference != 255) & mask
    expected = np.array([[np.sum((pred == k) & (reference == c) & counted) for c in range(4)] for k in range(5)])
    result = confusion_matrix(pred, reference, mask=mask, block_shape=block_shape)
    np.testing.assert_array_equal(result, expected)


def test_blockwise_2d_and_zarr_inputs():
    import zarr

    rng = np.random.default_rng(8)
    pred = rng.integers(0, 3, size=(13, 17))
    reference = rng.integers(0, 2, size=(13, 17))
    whole = np.array([[np.sum((pred == k) & (reference == c)) for c in range(2)] for k in range(3)])
    np.testing.assert_array_equal(confusion_matrix(pred, reference, block_shape=(4, 5)), whole)
    with pytest.raises(OrgasegError, match="must have 2 sizes"):
        confusion_matrix(pred, reference, block_shape=(1, 4, 5))
    stored = zarr.create_array(store={}, shape=(1, 13, 17), chunks=(1, 5, 5), dtype="int64")
    stored[:] = pred[None]
    np.testing.assert_array_equal(confusion_matrix(stored, reference[None]), whole)


def test_lazy_inputs_and_progress():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, size=(4, 6, 5))
    reference = rng.integers(0, 3, size=(4, 6, 5))
    calls = []
    result = confusion_matrix(
        as_volume(pred), as_volume(reference), block_shape=(2, 6, 5), progress=lambda *a: calls.append(a)
    )
    np.testing.assert_array_equal(result, confusion_matrix(pred, reference))
    assert calls == [("confusion matrix", 1, 2), ("confusion matrix", 2, 2)]


def test_accumulator_adds_blocks_and_merges_workers():
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 4, size=(6, 10))
    reference = rng.integers(0, 3, size=(6, 10))
    whole = confusion_matrix(pred, reference)
    first, second = ConfusionAccumulator(), ConfusionAccumulator()
    first.add(pred[:2], reference[:2])
    second.add(pred[2:], reference[2:])
    first.merge(second)
    assert first.n_voxels == 60
    np.testing.assert_array_equal(first.result(), whole)
    with pytest.raises(OrgasegError, match="n_clusters=2"):
        ConfusionAccumulator(n_clusters=2).merge(first)
    report = EvaluationReport.from_confusion(first.result(), mode="merge")
    assert report.classes == ["class_0", "class_1", "class_2"] and list(report.results) == ["merge"]


def test_fixed_sizes_pad_and_validate():
    result = confusion_matrix(PRED_B, REF_B, n_clusters=4, n_classes=5)
    assert result.shape == (4, 5)
    np.testing.assert_array_equal(result[:2, :3], [[3, 0, 0], [0, 2, 1]])
    assert result[2:].sum() == 0 and result[:, 3:].sum() == 0
    with pytest.raises(OrgasegError, match="n_classes=2"):
        confusion_matrix(PRED_B, REF_B, n_classes=2)
    with pytest.raises(OrgasegError, match="n_clusters=1"):
        confusion_matrix(PRED_B, REF_B, n_clusters=1)
    with pytest.raises(OrgasegError, match=r"holds 3 counted values \(0, 1, 2; 255 not scored\)"):
        evaluate(PRED_B, REF_B, classes=["a", "b"])


def test_errors_name_the_problem():
    with pytest.raises(OrgasegError, match=r"\(1, 10\).*\(2, 5\)"):
        confusion_matrix(PRED_A, REF_A.reshape(2, 5))
    with pytest.raises(OrgasegError, match="mask has shape"):
        confusion_matrix(PRED_A, REF_A, mask=np.ones((10, 1)))
    with pytest.raises(OrgasegError, match="no voxel was counted"):
        confusion_matrix(PRED_A, REF_A, mask=np.zeros_like(REF_A))
    with pytest.raises(OrgasegError, match="no voxel was counted"):
        evaluate(PRED_A, np.full_like(REF_A, 255))
    # with a class map, 255 is a class; the message names the map, not the map's internal ignore value
    with pytest.raises(OrgasegError, match=r"mask is empty or the reference holds no value the class map names "
                                           r"\(.*255.*mitochondria") as raised:
        evaluate(PRED_A, np.full_like(REF_A, 255), class_map="0=other,255=mitochondria", mask=np.zeros_like(REF_A))
    assert "ignore values" not in str(raised.value)
    with pytest.raises(OrgasegError, match="negative"):
        confusion_matrix(PRED_A - 1, REF_A)
    # labels saved as floats (Fiji's 32-bit label images) count when they hold whole numbers only
    np.testing.assert_array_equal(confusion_matrix(PRED_A.astype(np.float32), REF_A.astype(np.float32)),
                                  confusion_matrix(PRED_A, REF_A))
    with pytest.raises(OrgasegError, match=r"must hold integer labels; its float64 values include 0.5"):
        confusion_matrix(PRED_A + 0.5, REF_A)
    with pytest.raises(OrgasegError, match=r"values include nan"):
        confusion_matrix(np.where(PRED_A == 0, np.nan, PRED_A), REF_A)
    with pytest.raises(OrgasegError, match="2D or 3D"):
        confusion_matrix(PRED_A.ravel(), REF_A.ravel())
    with pytest.raises(OrgasegError, match="unknown evaluation mode 'best'"):
        evaluate(PRED_A, REF_A, mode="best")
    with pytest.raises(OrgasegError, match="unknown evaluation mode"):
        scores_from_confusion(np.eye(2, dtype=int), None, mode="hungarian")
    with pytest.raises(OrgasegError, match="background class 'nucleus'"):
        evaluate(PRED_A, REF_A, classes=["bg", "mito"], background="nucleus")
    with pytest.raises(OrgasegError, match="counts no voxel"):
        scores_from_confusion(np.zeros((2, 2), dtype=int), None)


def test_ids_too_large_for_a_confusion_matrix_are_refused_not_allocated(tmp_path, capsys):
    # an id of 2^40 (instance ids, a volume of other values) asked numpy for a 48 TiB matrix: a MemoryError
    big = np.where(PRED_A == 2, 2**40, PRED_A).astype(np.uint64)
    with pytest.raises(OrgasegError, match=r"predicted cluster id 1,099,511,627,776 is too large.*up to "
                                           r"1,048,575; a segmentation's ids are its clusters 0\.\.K-1"):
        evaluate(big, REF_A)
    with pytest.raises(OrgasegError, match=r"reference class id 1,099,511,627,776 is too large.*class map"):
        confusion_matrix(PRED_A, np.where(REF_A == 1, 2**40, 0).astype(np.uint64))
    # the largest allowed id still counts; a fixed K is checked against K, as before
    assert confusion_matrix(np.where(PRED_A == 2, MAX_ID, PRED_A), REF_A).shape == (MAX_ID + 1, 2)
    with pytest.raises(OrgasegError, match="out of range for n_clusters=3"):
        confusion_matrix(big, REF_A, n_clusters=3)
    np.save(tmp_path / "pred.npy", big.reshape(1, 1, 10))
    np.save(tmp_path / "ref.npy", REF_A.reshape(1, 1, 10))
    assert main(["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / "ref.npy"),
                 "-o", str(tmp_path / "report"), "--quiet"]) == 2
    assert "orgaseg evaluate: error: predicted cluster id 1,099,511,627,776 is too large" in capsys.readouterr().err


def test_background_by_name_or_id_and_both_modes():
    confusion = confusion_matrix(PRED_B, REF_B)
    both = scores_from_confusion(confusion, ["a", "b", "c"], background=["a", 1], mode="both")
    assert set(both) == {"merge", "strict"}
    assert both["merge"]["mean_dice_organelles"] == pytest.approx(0.0)  # only c is an organelle
    report = evaluate(PRED_B, REF_B, classes=["a", "b", "c"], background=[0, 1])
    assert report.background == ["a", "b"]
    # D = [[6/8, 0], [4/7, 0], [0, 1]]: cluster 1 loses class 0 to cluster 0 in strict, joins it in merge.
    confusion = np.array([[3, 0], [2, 0], [0, 4]])
    assert match_clusters(confusion, "strict").tolist() == [0, UNMATCHED, 1]
    assert match_clusters(confusion, "merge").tolist() == [0, 0, 1]
    # A cluster without counted voxels stays unmatched in merge mode too.
    assert match_clusters(np.array([[0, 0], [5, 0], [0, 4]]), "merge").tolist() == [UNMATCHED, 0, 1]


def test_report_dict_markdown_and_files(tmp_path):
    report = evaluate(PRED_A, REF_A, classes=["bg", "mito"])
    data = report.to_dict()
    assert list(data) == ["k", "classes", "background", "n_voxels", "empty_classes", "empty_clusters", "merge",
                          "strict", "confusion"]
    assert data["k"] == 3 and data["n_voxels"] == 10 and data["background"] == ["bg"]
    assert data["confusion"] == [[4, 1], [0, 3], [2, 0]]
    for mode in ("merge", "strict"):
        assert set(data[mode]) == {"per_class", "mean_dice", "mean_dice_organelles", "accuracy", "mapping"}
        assert set(data[mode]["per_class"]["bg"]) == {"dice", "iou", "sensitivity", "precision"}
    only_merge = evaluate(PRED_A, REF_A, mode="merge").to_dict()
    assert "merge" in only_merge and "strict" not in only_merge

    markdown = report.to_markdown()
    for text in ("K = 3", "| bg | 0.9231 | 0.8571 | 1.0000 | 0.8571 |", "| bg | 0.7273 | 0.5714 | 0.6667 | 0.8000 |",
                 "mean Dice: 0.8901", "pixel accuracy: 0.7000", "2 → bg", "2 → —"):
        assert text in markdown

    paths = report.save(tmp_path / "out" / "eval")
    with pytest.raises(OrgasegError, match="report.json exists"):
        report.save(tmp_path / "out" / "eval")
    assert report.save(tmp_path / "out" / "eval", overwrite=True) == paths
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(data))
    assert paths["markdown"].read_text() == markdown
    # the heat map shows each cell's share of its reference class: M / column sums (6, 4)
    image = mpimg.imread(paths["confusion"])
    assert image.ndim == 3 and 200 < image.shape[0] <= 2000 and 300 < image.shape[1] <= 2000
    for share in (4 / 6, 2 / 6, 1 / 4, 3 / 4):
        cell = np.isclose(image[..., :3], colormaps["Blues"](share)[:3], atol=0.01).all(axis=-1)
        assert cell.mean() > 0.02, share
    written = sorted(p.name for p in (tmp_path / "out" / "eval").iterdir())
    assert written == ["confusion.png", "report.json", "report.md"]  # no temporary files left


VNC_CLASSES = {255: 0, 0: 1, 32: 1, 64: 1, 96: 1, 128: 1, 191: 2, 159: 3}  # 223 (synapse) is ignored


# --- clusters without counted voxels -------------------------------------------------


def test_an_empty_cluster_is_never_mapped_and_is_reported_as_empty():
    # Cluster 4 lies only on ignored voxels (255): a row of zeros. With K = 5 > C = 4 the
    # assignment would otherwise hand it a class on a Dice tie of 0.
    reference = np.array([[0, 0, 1, 1, 2, 2, 3, 3, 255, 255]])
    pred = np.array([[0, 0, 1, 1, 2, 2, 3, 2, 4, 4]])
    report = evaluate(pred, reference, classes=["cyto", "membrane", "mito", "nucleus"])
    assert report.confusion[4].tolist() == [0, 0, 0, 0] and report.empty_clusters == [4]
    for mode in ("merge", "strict"):
        assert report.results[mode]["mapping"]["4"] is None
    assert report.results["strict"]["mapping"] == {"0": "cyto", "1": "membrane", "2": "mito", "3": "nucleus",
                                                   "4": None}
    assert report.to_dict()["empty_clusters"] == [4]
    assert "4 → empty" in report.to_markdown() and "Empty clusters (no counted voxel, mapped to no class): 4." in \
        report.to_markdown()
    # more classes than counted clusters: the empty one still takes none
    confusion = np.array([[5, 0, 0], [0, 0, 0], [0, 4, 0], [0, 0, 0]])
    for mode in ("merge", "strict"):
        assert match_clusters(confusion, mode).tolist() == [0, UNMATCHED, 1, UNMATCHED]


# --- class maps ------------------------------------------------------------------------

GREY = np.array([[255, 255, 0, 64, 128, 191, 159, 223]])  # vnc grey levels; 223 = synapse, not scored
GREY_PRED = np.array([[0, 0, 1, 1, 1, 2, 3, 3]])


def test_grey_levels_without_a_class_map_are_refused_with_the_fix():
    with pytest.raises(OrgasegError, match=r"not class ids 0..C-1 without gaps: it holds 7 values "
                                           r"\(0, 64, 128, 159, 191, 223, 255\)") as refused:
        evaluate(GREY_PRED, GREY, ignore=())
    # in the caller's terms: Python has class_map= and classes=, and no dataset= (walkthrough 17)
    fix = refused.value.args[0].split("classes; give ")[1]
    assert render(fix) == ("a class map (class_map='255=intracellular,0..128=membrane,...', a mapping or a JSON file), "
                           "a dataset's (class_map=orgaseg.datasets.CLASS_MAPS[NAME], NAME 'vnc' or 'cdeep3m-mito'), "
                           "or class names (classes=[...]) when the missing ids are classes absent here")
    assert render(fix, command_line=True) == (
        "a class map (--class-map 255=intracellular,0..128=membrane,... or a JSON file; class_map= in Python), a "
        "dataset's (--dataset vnc|cdeep3m-mito; orgaseg.datasets.CLASS_MAPS), or class names (--classes; classes=) "
        "when the missing ids are classes absent here")
    with pytest.raises(OrgasegError, match="holds 6 values"):  # the default ignores 255: still gaps
        evaluate(GREY_PRED, GREY)
    with pytest.raises(OrgasegError, match=r"holds 2 values \(0, 2\)"):  # ids with a gap
        evaluate(np.array([[0, 1]]), np.array([[0, 2]]))
    # named classes may be absent from a crop: reported as empty, not refused
    assert evaluate(np.array([[0, 1]]), np.array([[0, 2]]), classes=["a", "b", "c"]).empty_classes == ["b"]


def test_one_based_ids_with_class_names_are_refused_with_the_class_map_that_names_them(tmp_path, capsys):
    # a facility annotation: 0 unannotated, 1..4 the classes; four names stand for the ids 0..3
    reference = np.array([[[0, 1, 2, 3, 4, 4]]], np.uint8)
    pred = np.array([[[0, 0, 1, 2, 3, 3]]], np.uint8)
    names = ["intracellular", "membrane", "mitochondria", "extracellular"]
    with pytest.raises(OrgasegError, match=r"holds 4 counted values \(1, 2, 3, 4; 0 not scored\), but 4 class "
                                           r"names .* ids 0\.\.3; .*class map 1=intracellular,2=membrane,"
                                           r"3=mitochondria,4=extracellular"):
        evaluate(pred, reference, classes=names, ignore=[0])
    with pytest.raises(OrgasegError, match=r"\(1, 2, 3, 4; 0 not scored\), but 3 class names .*name a class per "
                                           r"value, or give a class map"):
        evaluate(pred, reference, classes=names[:3], ignore=[0])
    tifffile.imwrite(tmp_path / "ref.tif", reference)
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    command = ["evaluate", str(tmp_path / "pred.tif"), "--reference", str(tmp_path / "ref.tif"), "--ignore", "0",
               "--quiet", "-o"]
    assert main([*command, str(tmp_path / "r0"), "--classes", *names]) == 2
    err = capsys.readouterr().err
    assert "but 4 class names (--classes NAME ...)" in err and "(--class-map MAP) instead" in err
    fix = err.split("give the class map ")[1].split()[0]
    assert main([*command, str(tmp_path / "r1"), "--class-map", fix]) == 0
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert report["classes"] == names and report["merge"]["mean_dice"] == pytest.approx(1.0)


def test_a_binary_mask_stored_as_0_255_is_refused_not_scored_as_one_class(tmp_path, capsys):
    # 255 is not scored by default, so a 0/255 mitochondria mask would leave one class: Dice 1 for anything
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[:, 2:5, 2:5] = 255
    pred = (np.arange(mask.size).reshape(mask.shape) % 3).astype(np.uint8)  # unrelated to the mask
    with pytest.raises(OrgasegError, match=r"only one class is scored.*0/255.*\(255\).*class_map='0=other") as refused:
        evaluate(pred, mask)
    assert str(refused.value).endswith("Give a class map: class_map='0=other,255=mitochondria'")
    assert refused.value.for_command_line().endswith("--class-map 0=other,255=mitochondria (class_map= in Python)")
    blocks_read = []
    with pytest.raises(OrgasegError, match="only one class is scored.*the class map names one class"):
        evaluate(pred, mask, class_map="255=mitochondria", progress=lambda *step: blocks_read.append(step))
    assert blocks_read == []  # refused before reading the volumes
    report = evaluate(pred, mask, class_map="0=other,255=mitochondria")
    assert report.classes == ["other", "mitochondria"] and report.to_dict()["merge"]["mean_dice"] < 0.7
    # a map whose second class names a value the reference never holds (a typo, or the wrong --dataset)
    with pytest.raises(OrgasegError, match=r"only one class \(a\) has reference voxels.*others \(b\)") as refused:
        evaluate(pred, mask, class_map="255=a,300=b")
    assert str(refused.value).endswith("(is it the right dataset's map)?")
    assert refused.value.for_command_line().endswith("(is it the right --dataset)?")
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "mask.npy", mask)
    command = ["evaluate", str(tmp_path / "pred.npy"), "--reference", str(tmp_path / "mask.npy"), "--quiet"]
    assert main(command + ["-o", str(tmp_path / "r1")]) == 2
    assert "only one class is scored" in capsys.readouterr().err
    assert not (tmp_path / "r1" / "report.json").exists()
    assert main(command + ["--class-map", "0=other,255=mitochondria", "-o", str(tmp_path / "r2")]) == 0


@pytest.mark.parametrize("spec", [
    "255=intracellular,0..128=membrane,191=mitochondria,159=extracellular",
    {"intracellular": [255], "membrane": [[0, 128]], "mitochondria": 191, "extracellular": [159]},
    # values to names, as name_clusters' names: it was "class 255 has 'intracellular'; give integer values"
    {255: "intracellular", **{v: "membrane" for v in (0, 32, 64, 96, 128)}, np.uint8(191): "mitochondria",
     159: "extracellular"},
    "json",
])
def test_a_class_map_scores_stored_values(tmp_path, spec):
    if spec == "json":
        spec = tmp_path / "classes.json"
        spec.write_text(json.dumps({"intracellular": [255], "membrane": [[0, 128]], "mitochondria": [191],
                                    "extracellular": [159]}))
    report = evaluate(GREY_PRED, GREY, class_map=spec)
    assert report.classes == ["intracellular", "membrane", "mitochondria", "extracellular"]
    assert report.n_voxels == 7  # 223 is named by no class: not scored
    assert report.confusion.tolist() == [[2, 0, 0, 0], [0, 3, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert report.results["merge"]["mapping"] == {"0": "intracellular", "1": "membrane", "2": "mitochondria",
                                                  "3": "extracellular"}


def test_a_dataset_class_map_is_the_loaders_own():
    from orgaseg.datasets.shared import CDEEP3M_TABLE, VNC_GREY_LEVELS

    vnc = CLASS_MAPS["vnc"]
    values = np.arange(256)
    expected = np.array([VNC_GREY_LEVELS.get(v, 255) for v in values])
    np.testing.assert_array_equal(vnc.lookup(values), expected)
    assert vnc.background == ("intracellular", "extracellular")
    np.testing.assert_array_equal(CLASS_MAPS["cdeep3m-mito"].lookup(values), CDEEP3M_TABLE)
    report = evaluate(GREY_PRED, GREY, class_map=vnc)
    assert report.background == ["intracellular", "extracellular"] and report.n_voxels == 7


def test_a_class_map_reads_float_references_as_whole_numbers_only():
    # a float reference (Fiji's 32-bit labels) is read through a class map as without one: whole numbers
    # count, a fraction or NaN is an error; the map's ranges took 64.5 for membrane (0..128) and left 190.5
    # and NaN unscored without a word
    grey = GREY.astype(np.float32)
    assert evaluate(GREY_PRED, grey, class_map=CLASS_MAPS["vnc"]).confusion.tolist() == \
        evaluate(GREY_PRED, GREY, class_map=CLASS_MAPS["vnc"]).confusion.tolist()
    for value, shown in ((64.5, "64.5"), (190.5, "190.5"), (np.nan, "nan")):
        fractional = np.where(GREY == 191, value, grey).astype(np.float32)
        with pytest.raises(OrgasegError, match=rf"reference must hold integer labels; its float32 values include {shown}"):
            evaluate(GREY_PRED, fractional, class_map="255=intracellular,0..128=membrane,191=mitochondria")


def test_class_map_errors():
    for text, message in (("1=a,0..3=b", "value 1 is named twice"), ("a=1", "'a=1' is not understood"),
                          ("5..3=a", "range 5..3 is empty")):
        with pytest.raises(OrgasegError, match=message):
            parse_class_map(text)
    with pytest.raises(OrgasegError, match="no such|cannot read the class map"):
        parse_class_map("/nowhere/classes.json")
    with pytest.raises(OrgasegError, match="not both"):
        evaluate(GREY_PRED, GREY, class_map="255=a", classes=["a"])
    with pytest.raises(OrgasegError, match=r"ignore values \[255\] are classes"):
        evaluate(GREY_PRED, GREY, class_map="255=a", ignore=[255])
    assert str(ClassMap.from_lookup(["a", "b"], np.array([0, 0, 255, 1]))) == "0..1=a,3=b"


def test_reference_classes_marks_every_unscored_voxel():
    values = np.array([0, 1, 7, 255])
    assert reference_classes(values).tolist() == [0, 1, 7, 255]
    assert reference_classes(values, ignore=[7]).tolist() == [0, 1, 255, 255]
    assert reference_classes(values, class_map="1=a,7=b").tolist() == [255, 0, 1, 255]
    assert reference_classes(values, mask=np.array([1, 0, 1, 1])).tolist() == [0, 255, 7, 255]


def _vnc_like(tmp_path):
    """A 3-slice prediction and a grey-level reference as folders of PNGs (as vnc ships them), and raw."""
    rng = np.random.default_rng(0)
    grey = np.array([255, 0, 191, 159, 223], dtype=np.uint8)[rng.integers(0, 5, (3, 16, 20))]
    pred = np.searchsorted([0, 159, 191, 223, 255], grey).astype(np.uint8)  # 5 clusters, one per grey level
    for name, volume in (("labels", grey), ("pred", pred)):
        (tmp_path / name).mkdir()
        for z, plane in enumerate(volume):
            Image.fromarray(plane).save(tmp_path / name / f"{z:02d}.png")
    tifffile.imwrite(tmp_path / "raw.tif", rng.normal(100, 10, grey.shape).astype(np.float32), photometric="minisblack")
    return tmp_path / "pred", tmp_path / "labels", tmp_path / "raw.tif"


def test_cli_refuses_grey_levels_and_scores_them_with_a_class_map(tmp_path, capsys):
    pred, labels, raw = _vnc_like(tmp_path)
    assert main(["evaluate", str(pred), "--reference", str(labels), "-o", str(tmp_path / "r0"), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "not class ids 0..C-1" in err[0] and "--dataset vnc" in err[0]
    assert not (tmp_path / "r0").exists()
    for options in (["--dataset", "vnc"],
                    ["--class-map", "255=intracellular,0..128=membrane,191=mitochondria,159=extracellular"]):
        out = tmp_path / options[0].strip("-")
        assert main(["evaluate", str(pred), "--reference", str(labels), *options, "--raw", str(raw), "-o", str(out),
                     "--quiet"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["classes"] == ["intracellular", "membrane", "mitochondria", "extracellular"]
        # cluster 3 lies only on synapses (223, not scored): empty, mapped to nothing
        assert report["empty_clusters"] == [3] and report["merge"]["mapping"]["3"] is None
        assert report["merge"]["mapping"] == {"0": "membrane", "1": "extracellular", "2": "mitochondria", "3": None,
                                              "4": "intracellular"}
        assert (out / "overlay.png").exists()
    assert report["background"] == ["intracellular"]  # a user's map: the first class
    assert main(["evaluate", str(pred), "--reference", str(labels), "--dataset", "betaseg", "-o",
                 str(tmp_path / "r1"), "--quiet"]) == 2
    assert "datasets with one: vnc, cdeep3m-mito" in capsys.readouterr().err


def test_cli_checks_the_raw_volume_before_writing_the_report(tmp_path, capsys):
    pred, labels, raw = _vnc_like(tmp_path)
    grey = tifffile.imread(raw)
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["volumes/raw"] = grey
        f["volumes/smoothed"] = grey
    tifffile.imwrite(tmp_path / "thin.tif", grey[:1], photometric="minisblack")
    evaluate_with = ["evaluate", str(pred), "--reference", str(labels), "--dataset", "vnc", "--quiet", "-o"]
    for raw_options, reason in ((["--raw", str(tmp_path / "raw.h5")], "needs a key; pass --raw-key NAME"),
                                (["--raw", str(tmp_path / "thin.tif")], "the raw volume has shape")):
        out = tmp_path / "report"
        assert main([*evaluate_with, str(out), *raw_options]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and reason in err[0]
        assert not out.exists()  # nothing written: the rerun is not refused
    assert main([*evaluate_with, str(tmp_path / "report"), "--raw", str(tmp_path / "raw.h5"),
                 "--raw-key", "volumes/raw"]) == 0
    assert (tmp_path / "report" / "overlay.png").exists()
    # a mask in a container has its own key, as the reference and the raw volume do
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f["cell"] = np.ones(grey.shape, np.uint8)
        f["nucleus"] = np.zeros(grey.shape, np.uint8)
    masked = [*evaluate_with, str(tmp_path / "masked"), "--mask", str(tmp_path / "mask.h5")]
    assert main(masked) == 2
    assert "needs a key; pass --mask-key NAME" in capsys.readouterr().err and not (tmp_path / "masked").exists()
    assert main([*masked, "--mask-key", "cell"]) == 0


def test_cli_reads_the_raw_volume_as_segment_read_it(tmp_path, capsys):
    # one channel of a two-channel stack was segmented (--channel 1): --raw with that file reads that channel, as
    # 'name --refine' does, for the segmentation and for the labels named from it; another file reads as it comes
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 3, (3, 32, 32)).astype(np.uint8)
    channels = np.stack([rng.normal(0, 1, reference.shape), reference * 50.0 + rng.normal(0, 5, reference.shape)], 1)
    tifffile.imwrite(tmp_path / "two channels.tif", channels.astype(np.float32), imagej=True,
                     metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "reference.tif", reference, photometric="minisblack")
    seg, named = tmp_path / "seg.ome.zarr", tmp_path / "named.ome.zarr"
    assert main(["segment", str(tmp_path / "two channels.tif"), "--channel", "1", "--voxel-size", "40", "10", "10",
                 "-k", "3", "-o", str(seg), "--quiet"]) == 0
    (tmp_path / "clicks.csv").write_text("z,y,x,name\n" + "".join(
        f"{z},{y},{x},{'abc'[reference[z, y, x]]}\n" for z, y, x in zip(*(a[:30] for a in np.nonzero(reference >= 0)))))
    assert main(["name", str(seg), "--points", str(tmp_path / "clicks.csv"), "-o", str(named), "--quiet"]) == 0
    capsys.readouterr()
    for prediction, mode in ((seg, "merge"), (named, "names")):
        out = tmp_path / f"report-{mode}"
        assert main(["evaluate", str(prediction), "--reference", str(tmp_path / "reference.tif"), "--classes", "a",
                     "b", "c", "--mode", mode, "--raw", str(tmp_path / "two channels.tif"), "-o", str(out),
                     "--quiet"]) == 0, capsys.readouterr().err
        assert (out / "overlay.png").exists()
    copy = tmp_path / "copy.tif"
    copy.write_bytes((tmp_path / "two channels.tif").read_bytes())
    assert main(["evaluate", str(seg), "--reference", str(tmp_path / "reference.tif"), "--classes", "a", "b", "c",
                 "--raw", str(copy), "-o", str(tmp_path / "report-copy"), "--quiet"]) == 2
    assert "copy.tif: data has 2 channels" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "vnc").is_dir(), reason=f"real data not found at {DATA / 'vnc'}")
def test_vnc_slice_matches_an_independent_count():
    from sklearn.metrics import confusion_matrix as sk_confusion

    raw = tifffile.imread(DATA / "vnc" / "stack1" / "raw" / "00.tif")[:512, :512]
    labels = np.asarray(Image.open(DATA / "vnc" / "stack1" / "labels" / "labels00000000.png"))[:512, :512]
    lookup = np.full(256, 255, dtype=np.uint8)
    for grey, cls in VNC_CLASSES.items():
        lookup[grey] = cls
    reference = lookup[labels]
    pred = np.digitize(raw, np.percentile(raw, [20, 40, 60, 80]))  # five intensity bins, a crude "clustering"
    counted = reference != 255
    expected = sk_confusion(pred[counted], reference[counted], labels=range(5))[:, :4]
    names = ["intracellular", "membrane", "mitochondria", "extracellular"]
    report = evaluate(pred[None], reference[None], classes=names, block_shape=(1, 100, 300))
    np.testing.assert_array_equal(report.confusion, expected)
    assert report.n_voxels == counted.sum()
    merge = report.results["merge"]
    assert set(merge["mapping"].values()) <= set(names)
    assert merge["mean_dice"] == pytest.approx(_merge_mean_dice_by_search(expected))


def _merge_mean_dice_by_search(confusion: np.ndarray) -> float:
    """Merge-mode mean Dice by trying every one-to-one assignment (no Hungarian solver)."""
    n_clusters, n_classes = confusion.shape
    sizes, totals = confusion.sum(axis=1), confusion.sum(axis=0)

    def total_dice(assignment):
        return sum(2 * confusion[k, c] / (sizes[k] + totals[c]) for c, k in enumerate(assignment))

    best = max(itertools.permutations(range(n_clusters), n_classes), key=total_dice)
    merged = np.zeros((n_classes, n_classes))
    for k in range(n_clusters):
        target = best.index(k) if k in best else int(np.argmax(confusion[k]))
        merged[target] += confusion[k]
    true_positive = np.diag(merged)
    return float(np.mean(2 * true_positive / (merged.sum(axis=1) + totals)))


def test_cli_refuses_an_existing_report_before_scoring(tmp_path, capsys, monkeypatch):
    pred, labels, _ = _vnc_like(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("{}")
    import orgaseg.evaluation

    def must_not_run(*args, **kwargs):
        raise AssertionError("scored although the report would be refused")

    monkeypatch.setattr(orgaseg.evaluation, "evaluate", must_not_run)
    assert main(["evaluate", str(pred), "--reference", str(labels), "--dataset", "vnc", "-o", str(out), "--quiet"]) == 2
    assert "report.json exists" in capsys.readouterr().err and (out / "report.json").read_text() == "{}"


def test_a_named_volume_is_scored_by_its_names(tmp_path, capsys):
    # ids: 0 unassigned, 1 mito, 2 other; by name, not by the best match
    reference = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])  # 0 other, 1 mito
    named = np.array([[2, 2, 1, 0, 1, 1, 0, 2]])
    report = evaluate(named, reference, classes=["other", "mito"], mode="names",
                      label_names=["unassigned", "mito", "other"])
    scores = report.to_dict()["names"]
    # other: predicted at voxels 0, 1, 7; true at 0-3 -> tp 2, fp 1, fn 2; mito: predicted 2, 4, 5; true 4-7 -> 2, 1, 2
    assert scores["per_class"]["other"]["dice"] == pytest.approx(4 / 7)
    assert scores["per_class"]["mito"]["dice"] == pytest.approx(4 / 7)
    assert scores["mapping"] == {"0": None, "1": "mito", "2": "other"}
    assert "## by name (no matching)" in report.to_markdown()
    # the report speaks of names, not of K clusters
    assert report.to_markdown().startswith("# Evaluation, 3 named ids (unassigned, mito, other)\n")
    assert report.to_dict()["label_names"] == ["unassigned", "mito", "other"]
    no_mito = evaluate(np.where(named == 1, 0, named), reference, classes=["other", "mito"], mode="names",
                       label_names=["unassigned", "mito", "other"])
    assert "Names on no counted voxel: mito (1)." in no_mito.to_markdown()
    with pytest.raises(OrgasegError, match="none of the prediction's names \\(a, b\\) is a reference class"):
        evaluate(named[:, :4] % 2, reference[:, :4], classes=["other", "mito"], mode="names", label_names=["a", "b"])
    with pytest.raises(OrgasegError, match="holds id 2, but only 2 names"):
        evaluate(named, reference, classes=["other", "mito"], mode="names", label_names=["unassigned", "mito"])
    with pytest.raises(OrgasegError, match="label_names go with mode='names'"):
        evaluate(named, reference, classes=["other", "mito"], mode="names")
    # from the command line: the names written with the labels
    from orgaseg.io import write_labels

    path = write_labels(tmp_path / "named.ome.zarr", named[None], voxel_size=(1, 1, 1), provenance={},
                        label_names=["unassigned", "mito", "other"])
    np.save(tmp_path / "ref.npy", reference[None])
    assert main(["evaluate", str(path), "--reference", str(tmp_path / "ref.npy"), "--class-map", "0=other,1=mito",
                 "--mode", "names", "-o", str(tmp_path / "r"), "--quiet"]) == 0
    stored = json.loads((tmp_path / "r" / "report.json").read_text())
    assert stored["names"]["per_class"]["mito"]["dice"] == pytest.approx(4 / 7)
    # from Python, as the docstring says: read_label_names of the path, its {id: name} passed on as it is
    # (a path failed with "'str' object has no attribute 'path'", the dict with "unhashable type: 'slice'")
    from orgaseg.organelles import read_label_names

    names = read_label_names(path)
    assert names == {0: "unassigned", 1: "mito", 2: "other"}
    by_dict = evaluate(named, reference, classes=["other", "mito"], mode="names", label_names=names)
    assert by_dict.to_dict()["names"] == scores and by_dict.label_names == ["unassigned", "mito", "other"]
    np.save(tmp_path / "plain.npy", named[None])
    assert main(["evaluate", str(tmp_path / "plain.npy"), "--reference", str(tmp_path / "ref.npy"), "--class-map",
                 "0=other,1=mito", "--mode", "names", "-o", str(tmp_path / "s"), "--quiet"]) == 2
    assert "carries none (orgaseg name writes them)" in capsys.readouterr().err
    # a named volume scored by merge mode is said to have names
    with pytest.warns(UserWarning, match=r"named\.ome\.zarr is a named volume \(unassigned, mito, other\): --mode "
                                         r"names scores it by its names"):
        assert main(["evaluate", str(path), "--reference", str(tmp_path / "ref.npy"), "--class-map", "0=other,1=mito",
                     "-o", str(tmp_path / "t"), "--quiet"]) == 0
