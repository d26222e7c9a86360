"""Figures: the label palette, confusion-matrix plots and overlays written as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import tifffile
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage as ndi

from orgaseg.errors import OrgasegError
from orgaseg.viz import class_colors, label_colors, overlay_figure, plot_confusion

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _phantom(shape=(120, 160), seed=0):
    """Raw slice with four vertical class bands, ignored top rows, and a 6-cluster prediction."""
    rng = np.random.default_rng(seed)
    _, xx = np.mgrid[: shape[0], : shape[1]]
    reference = (xx * 4 // shape[1]).astype(np.uint8)
    raw = reference * 50.0 + rng.normal(0, 15, shape)
    reference[:10] = 255
    prediction = (xx * 6 // shape[1]).astype(np.uint16)
    return raw, prediction, reference


def panel_columns(image: np.ndarray) -> list[tuple[int, int]]:
    """Column ranges of the figure's panels: runs of columns mostly covered by non-white pixels.

    Only the rows where panels lie count (those with much ink), so titles and
    the legend do not join the panels.
    """
    ink = (image[..., :3] < 0.98).any(axis=-1)
    rows = ink.mean(axis=1) > 0.5
    covered = ink[rows].mean(axis=0) > 0.5
    edges = np.flatnonzero(np.diff(np.concatenate([[0], covered.astype(int), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2]) if b - a > 20]


def colour_shares(image: np.ndarray, columns: tuple[int, int], colours: np.ndarray) -> np.ndarray:
    """Share of a panel's inked pixels that show each of ``colours`` (RGBA rows)."""
    panel = image[:, columns[0] : columns[1], :3]
    inked = (panel < 0.98).any(axis=-1)
    matches = np.isclose(panel[:, :, None, :], colours[None, None, :, :3], atol=0.02).all(axis=-1)
    return matches[inked].mean(axis=0)


def test_label_colors_fixed_distinct_and_prefix_stable():
    colors = label_colors(30)
    assert colors.shape == (30, 4) and colors.dtype == np.float64
    assert np.all((colors >= 0) & (colors <= 1)) and np.all(colors[:, 3] == 1)
    np.testing.assert_array_equal(label_colors(7), colors[:7])
    assert len(np.unique(colors.round(3), axis=0)) == 30
    np.testing.assert_allclose(colors[0, :3], [31 / 255, 119 / 255, 180 / 255])  # tab10 blue
    assert label_colors(0).shape == (0, 4)
    for bad in (2.5, -1, "3"):  # 2.5 gave two colours
        with pytest.raises(OrgasegError, match="n must be a whole number >= 0"):
            label_colors(bad)


def test_plot_confusion_writes_a_heat_map(tmp_path):
    confusion = np.array([[5000, 20, 1], [30, 40000, 200], [1, 2, 123456], [0, 0, 0]])
    path = plot_confusion(
        confusion, ["cyto", "membrane", "mito"], mapping={"0": "cyto", "1": "membrane", "2": "mito", "3": None},
        path=tmp_path / "sub" / "confusion.png", title="K = 4",
    )
    assert path == tmp_path / "sub" / "confusion.png"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert 300 < image.shape[1] <= 2000 and 200 < image.shape[0] <= 2000
    assert len(np.unique(image[..., :3].reshape(-1, 3).round(2), axis=0)) > 50  # not a blank canvas
    # Each class went almost wholly to its own cluster: three dark cells on the diagonal.
    dark = np.isclose(image[..., :3], colormaps["Blues"](0.99)[:3], atol=0.03).all(axis=-1)
    cells, n_cells = ndi.label(dark)
    sizes = ndi.sum(dark, cells, range(1, n_cells + 1))
    big = [i + 1 for i in np.flatnonzero(sizes > 0.02 * dark.size)]  # not the colour bar's tip
    assert len(big) == 3
    centres = np.array(ndi.center_of_mass(dark, cells, big))
    assert np.all(np.diff(centres[np.argsort(centres[:, 0])], axis=0) > 0)  # down and to the right
    with pytest.raises(OrgasegError, match="2 class names"):
        plot_confusion(confusion, ["a", "b"], path=tmp_path / "bad.png")


def test_plot_confusion_of_thousands_of_clusters_numbers_the_axis_instead_of_labelling_each(tmp_path, monkeypatch):
    # an instance volume scored as a prediction: a bboxed tick label per cluster took matplotlib a minute at 3,000
    from orgaseg.viz import confusion_plot

    drawn = []
    save = confusion_plot.save_png
    monkeypatch.setattr(confusion_plot, "save_png", lambda figure, path: drawn.append(figure) or save(figure, path))
    confusion = np.zeros((3000, 2), dtype=np.int64)
    confusion[[0, 2999], [0, 1]] = 7
    plot_confusion(confusion, ["a", "b"], mapping={"0": "a", "2999": "b"}, path=tmp_path / "many.png")
    axes = drawn[-1].axes[0]
    assert len(axes.get_yticks()) < 20 and axes.get_ylabel() == "cluster id (the mapping is in the report)"
    plot_confusion(confusion[:confusion_plot.MAX_LABELLED_CLUSTERS], ["a", "b"], path=tmp_path / "few.png")
    assert len(drawn[-1].axes[0].get_yticks()) == confusion_plot.MAX_LABELLED_CLUSTERS


def test_the_raw_panel_of_a_slice_with_nan_is_drawn_not_blank():
    # NaN (no data, outside an aligned stack) made both percentiles NaN: every pixel of the raw panel NaN, drawn blank
    from orgaseg.viz.overlay import robust_grey

    raw, _, _ = _phantom()
    padded = raw.copy()
    padded[:, :8] = np.nan
    padded[0, 20] = np.inf
    grey = robust_grey(padded)
    assert np.isfinite(grey).all() and (grey[:, :8] == 0).all() and grey[0, 20] == 1
    lo, hi = np.percentile(raw[:, 8:], [1, 99])
    np.testing.assert_allclose(grey[1:, 8:], np.clip((raw[1:, 8:] - lo) / (hi - lo), 0, 1), atol=0.02)
    np.testing.assert_array_equal(robust_grey(raw), np.clip((raw - np.percentile(raw, 1))
                                                            / np.subtract(*np.percentile(raw, [99, 1])), 0, 1))
    assert not robust_grey(np.full((4, 4), np.nan)).any()


def test_overlay_panels_and_size(tmp_path):
    raw, prediction, reference = _phantom()
    three = overlay_figure(raw, prediction, path=tmp_path / "three.png", title="prediction only")
    five = overlay_figure(
        raw, prediction, reference, path=tmp_path / "five.png", class_names=["cyto", "membrane", "mito", "ecs"],
        mapping={0: "cyto", 1: "membrane", 2: "membrane", 3: "mito", 4: "ecs", 5: None},
    )
    small, wide = mpimg.imread(three), mpimg.imread(five)
    assert wide.shape[1] <= 2000 and wide.shape[1] > small.shape[1]
    # Height follows the slice's aspect ratio (3:4), plus title / legend room.
    assert 0.5 * wide.shape[1] / 5 < wide.shape[0] < 1.5 * wide.shape[1] / 5
    assert len(panel_columns(small)) == 3
    raw_panel, clusters, _, mapped, classes = panel_columns(wide)
    # The cluster panel shows the six clusters (vertical bands of equal width) in their palette colours.
    np.testing.assert_allclose(colour_shares(wide, clusters, label_colors(6)), 1 / 6, atol=0.03)
    np.testing.assert_allclose(colour_shares(small, panel_columns(small)[1], label_colors(6)), 1 / 6, atol=0.03)
    # Mapped to classes (class palette), clusters 1 and 2 are both membrane, 4 is ecs, 5 is
    # unmatched (raw shows through), and the ignored top rows are left uncoloured.
    np.testing.assert_allclose(colour_shares(wide, mapped, class_colors(4)), [1, 2, 1, 1] / np.array(6) * 110 / 120,
                               atol=0.03)
    # The reference panel shows the four class bands below the ignored top rows.
    np.testing.assert_allclose(colour_shares(wide, classes, class_colors(4)), 0.25 * 110 / 120, atol=0.03)
    assert colour_shares(wide, raw_panel, label_colors(6)).max() < 0.01  # the raw panel is grey
    # Neither palette shows up in the other's panels: a cluster never reads as a class.
    for panel in (mapped, classes):
        assert colour_shares(wide, panel, label_colors(6)).max() < 0.01
    assert colour_shares(wide, clusters, class_colors(4)).max() < 0.01
    # A tall, narrow slice stays within about 2000 px in both directions.
    tall_raw, tall_prediction = raw.T.repeat(4, axis=0), prediction.T.repeat(4, axis=0)
    tall = mpimg.imread(overlay_figure(tall_raw, tall_prediction, path=tmp_path / "t.png"))
    assert tall.shape[0] <= 2100 and tall.shape[1] <= 2000


def _legend_colours(image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Pixels of each colour below the panels (where the legends are)."""
    ink = (image[..., :3] < 0.98).any(axis=-1)
    below = np.flatnonzero(ink.mean(axis=1) > 0.9)[-1] + 1  # the panels span the width; the legends do not
    strip = image[below:, :, :3]
    return np.isclose(strip[:, :, None, :], colours[None, None, :, :3], atol=0.02).all(axis=-1).sum(axis=(0, 1))


def test_overlay_legends_one_per_palette(tmp_path):
    raw, prediction, reference = _phantom()
    only_clusters = mpimg.imread(overlay_figure(raw, prediction, path=tmp_path / "three.png"))
    assert np.all(_legend_colours(only_clusters, label_colors(6)) > 20)  # a swatch per cluster
    assert np.all(_legend_colours(only_clusters, class_colors(4)) == 0)  # and no class legend
    both = mpimg.imread(overlay_figure(raw, prediction, reference, path=tmp_path / "five.png",
                                       class_names=["cyto", "membrane", "mito", "ecs"],
                                       mapping={0: "cyto", 1: "membrane", 2: "membrane", 3: "mito", 4: "ecs", 5: None}))
    assert np.all(_legend_colours(both, label_colors(6)) > 20) and np.all(_legend_colours(both, class_colors(4)) > 20)


def test_mapped_panel_leaves_unscored_voxels_uncoloured(tmp_path):
    # The demo's case: a ring outside the cell (reference 255) falls in a cluster that is
    # mapped to a class; the mapped panel must not paint the ring as that class.
    raw, prediction, reference = _phantom()
    prediction[:20] = 5  # cluster 5 covers the 10 ignored top rows and 10 scored ones
    path = overlay_figure(raw, prediction, reference, path=tmp_path / "ring.png",
                          class_names=["cyto", "membrane", "mito", "ecs"], mapping={5: "ecs"})
    image = mpimg.imread(path)
    _, _, _, mapped, _ = panel_columns(image)
    ecs = colour_shares(image, mapped, class_colors(4))[3]
    # rows 10..19, and cluster 5's own band (the last sixth of the columns) below them; not the ignored rows
    assert ecs == pytest.approx(10 / 120 + 100 / 120 / 6, abs=0.02)


def test_class_colors_are_not_cluster_colors():
    clusters, classes = label_colors(20), class_colors(12)
    assert classes.shape == (12, 4) and np.all(classes[:, 3] == 1)
    np.testing.assert_array_equal(class_colors(5), classes[:5])
    assert len(np.unique(classes.round(3), axis=0)) == 12
    # perceived difference (CIE76 in Lab): the seven named class colours never look like a cluster colour
    distance = np.linalg.norm(_lab(classes[:7, :3])[:, None] - _lab(clusters[:, :3])[None], axis=-1)
    assert distance.min() > 15


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] to CIE L*a*b* (D65)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=-1)


def test_confusion_plot_labels_empty_clusters_and_uses_both_palettes(tmp_path):
    confusion = np.array([[50, 0], [0, 40], [0, 0]])
    image = mpimg.imread(plot_confusion(confusion, ["cyto", "mito"], mapping={"0": "cyto", "1": "mito", "2": None},
                                        path=tmp_path / "c.png"))
    # the tick labels sit on their palette colours, drawn at alpha 0.45 over white
    for colours in (label_colors(3), class_colors(2)):
        blended = 0.45 * colours[:, :3] + 0.55
        found = np.isclose(image[:, :, None, :3], blended[None, None], atol=0.02).all(axis=-1).sum(axis=(0, 1))
        assert np.all(found > 50)


def test_overlay_errors(tmp_path):
    raw, prediction, reference = _phantom()
    with pytest.raises(OrgasegError, match="prediction slice has shape"):
        overlay_figure(raw, prediction[:, :10], path=tmp_path / "x.png")
    with pytest.raises(OrgasegError, match="integer labels; its float64 values include 0.5"):
        overlay_figure(raw, prediction + 0.5, path=tmp_path / "x.png")
    with pytest.raises(OrgasegError, match="'golgi'"):
        overlay_figure(raw, prediction, mapping={0: "golgi"}, class_names=["cyto"], path=tmp_path / "x.png")
    with pytest.raises(OrgasegError, match="must be 2D"):
        overlay_figure(raw[None], prediction, path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not (DATA / "vnc").is_dir(), reason=f"real data not found at {DATA / 'vnc'}")
def test_overlay_of_a_real_vnc_slice(tmp_path):
    raw = tifffile.imread(DATA / "vnc" / "stack1" / "raw" / "00.tif")
    mito = np.asarray(Image.open(DATA / "vnc" / "stack1" / "mitochondria" / "00.png")) > 127
    prediction = np.digitize(raw, np.percentile(raw, [25, 50, 75]))
    path = overlay_figure(raw, prediction, mito.astype(np.uint8), path=tmp_path / "vnc.png",
                          class_names=["other", "mitochondria"])
    image = mpimg.imread(path)
    assert image.shape[1] <= 2000
    _, clusters, _, classes = panel_columns(image)
    # intensity quartiles: four clusters of about a quarter of the slice each
    np.testing.assert_allclose(colour_shares(image, clusters, label_colors(4)), 0.25, atol=0.03)
    other, mitochondria = colour_shares(image, classes, class_colors(2))
    assert other + mitochondria > 0.97 and mitochondria == pytest.approx(mito.mean(), abs=0.02)
