"""Superpixel graphs and the graph clusterers (SCCS, CS²C, superpixel k-means, classical spectral)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
import torch

import orgaseg
from orgaseg.cluster import CLUSTERERS, clusterer_from_dict
from orgaseg.cluster.graph import DEFAULT_KAPPA, Graph, affinity, laplacian, normalized_adjacency
from orgaseg.cluster.spectral_nets import (IncrementalCentroids, SpectralConfig, embed, graph_operators,
                                           sharpened_target, student_t, train_spectral)
from orgaseg.cluster.superpixels import pool_superpixels, region_slices, slic_superpixels, touching_pairs
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.features import FEATURES

GRAPH_KINDS = ("superpixel-kmeans", "spectral", "sccs", "cs2c", "cs2c-spa")


def test_pooling_equals_a_naive_loop_and_gives_single_pixel_superpixels_std_zero():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(9, 11))
    labels[0, 0] = 6  # a one-pixel superpixel
    labels[labels == 6] = 6
    labels[1:, :][labels[1:, :] == 6] = 5
    features = rng.normal(size=(9, 11, 3)).astype(np.float32)
    pooled = pool_superpixels(features, labels)
    assert pooled.shape == (7, 6)
    for i in range(7):
        values = features[labels == i]
        np.testing.assert_allclose(pooled[i, :3], values.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[i, 3:], values.std(axis=0), rtol=1e-4, atol=1e-6)
    assert np.all(pooled[6, 3:] == 0) and np.isfinite(pooled).all()


def test_touching_pairs_are_the_4_connected_neighbours_once():
    labels = np.array([[0, 0, 1],
                       [2, 2, 1],
                       [2, 3, 3]])
    assert touching_pairs(labels).tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_slic_covers_the_image_with_consecutive_ids_of_about_the_requested_size():
    from scipy import ndimage as ndi

    image = ndi.gaussian_filter(np.random.default_rng(1).random((120, 100)), 2)  # EM is smoother than white noise
    image = (image - image.min()) / (image.max() - image.min())
    labels = slic_superpixels(image, superpixel_px=100)
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))
    assert 60 <= len(ids) <= 180  # 120 requested


def test_regions_have_a_fixed_physical_side():
    assert len(region_slices((1024, 1024), 16.0, region_nm=560 * 16.0)) == 4  # 1024 px / 560 px -> 2 x 2
    assert len(region_slices((1024, 1024), 32.0, region_nm=560 * 16.0)) == 16  # 280 px regions
    assert len(region_slices((300, 300), 16.0, region_nm=560 * 16.0)) == 1
    windows = region_slices((100, 50), 1.0, region_nm=40.0)
    covered = np.zeros((100, 50), int)
    for ys, xs in windows:
        covered[ys, xs] += 1
    assert np.all(covered == 1)
    # pixels of 16 x 32 nm: the same side in nm, 560 pixels along y and 280 along x
    windows = region_slices((1024, 1024), (16.0, 32.0), region_nm=560 * 16.0)
    assert {ys.stop - ys.start for ys, _ in windows} == {512} and {xs.stop - xs.start for _, xs in windows} == {256}


def _random_graph(n=40, d=6, seed=0, touching=True):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    pairs = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1) if touching else None
    return x, affinity(x, touching=pairs)


def test_affinity_and_laplacian_properties():
    x, sparse = _random_graph()
    a = sparse.toarray()
    assert np.allclose(a, a.T) and np.all(a >= 0) and np.all(np.diag(a) == 0)
    rbf = np.exp(-((x[:, None] - x[None]) ** 2).mean(axis=2) / DEFAULT_KAPPA)
    np.fill_diagonal(rbf, 0)
    kept = (a > 0) & ~np.eye(len(a), dtype=bool)
    assert np.all(rbf[kept & (rbf < rbf.max() / 4)] <= a[kept & (rbf < rbf.max() / 4)] + 1e-6)  # only adjacency edges
    lap = laplacian(sparse).toarray().astype(np.float64)
    assert np.allclose(lap, lap.T, atol=1e-6)
    eigenvalues = np.linalg.eigvalsh(lap)
    assert eigenvalues.min() > -1e-5 and eigenvalues.max() < 2 + 1e-5  # PSD, spectrum in [0, 2]
    degree = a.sum(axis=1)
    assert np.allclose(lap @ np.sqrt(degree), 0, atol=1e-4)  # D^1/2 1 is in the null space
    a_hat = normalized_adjacency(sparse).toarray().astype(np.float64)
    looped = degree + 1
    assert np.allclose((a_hat * np.sqrt(looped)[None, :]).sum(axis=1), np.sqrt(looped), atol=1e-4)
    t_hat, t_lap = graph_operators(sparse)
    assert np.allclose(t_hat.to_dense().numpy(), a_hat, atol=1e-5)
    assert np.allclose(t_lap.to_dense().numpy(), lap, atol=1e-5)



def test_the_affinity_is_computed_in_bands_and_equals_the_dense_formula(monkeypatch):
    from orgaseg.cluster import graph

    n, d = 300, 6
    x = np.random.default_rng(4).normal(size=(n, d)).astype(np.float32)
    x[150:160] = x[:10] + 0.01  # the strongest edges lie in a later band than their first node's
    pairs = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    xd = x.astype(np.float64)
    rbf = np.exp(-((xd[:, None] - xd[None]) ** 2).mean(axis=2) / DEFAULT_KAPPA)
    np.fill_diagonal(rbf, 0.0)
    expected = np.maximum(rbf - rbf.max() / 4, 0.0)
    i, j = pairs.T
    expected[i, j] = expected[j, i] = np.maximum(expected[i, j], rbf[i, j])
    bands = []
    distances = graph.pairwise_sq_distances
    monkeypatch.setattr(graph, "pairwise_sq_distances", lambda x, rows: bands.append(rows) or distances(x, rows))
    monkeypatch.setattr(graph, "AFFINITY_CHUNK_PAIRS", 40 * n)
    a = affinity(x, touching=pairs)
    assert len(bands) == 8 and all(band.stop - band.start <= 40 for band in bands)  # never n x n at once
    assert isinstance(a, scipy.sparse.csr_matrix) and a.dtype == np.float32
    np.testing.assert_allclose(a.toarray(), expected, rtol=1e-5, atol=1e-7)


def test_the_smoothness_loss_equals_its_dense_form():
    from orgaseg.cluster.spectral_nets import smoothness_loss, sparse_tensor

    _, a = _random_graph(n=50, d=4)
    p = torch.softmax(torch.from_numpy(np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32)), dim=1)
    unit = torch.nn.functional.normalize(p, dim=1)
    dense = ((torch.from_numpy(a.toarray()) - 0.1) * (1.0 - unit @ unit.T)).mean() \
        + 0.5 * torch.abs(p.abs().sum(dim=1).mean() - 1.0)
    assert torch.allclose(smoothness_loss(p, sparse_tensor(a), 0.1, 0.5), dense, rtol=1e-5)


def test_training_keeps_a_small_pool_of_operators_and_rebuilds_a_large_one_alike(monkeypatch):
    from orgaseg.cluster import spectral_nets

    graphs = [Graph(*_random_graph(n=60, d=5, seed=seed)) for seed in range(3)]
    built = []
    sparse_tensor = spectral_nets.sparse_tensor
    monkeypatch.setattr(spectral_nets, "sparse_tensor", lambda a: built.append(a.shape) or sparse_tensor(a))
    config = SpectralConfig(steps=40, spatial=True)
    kept = train_spectral(graphs, k=3, config=config, seed=0).losses
    assert len(built) <= 3 * 3 + 3  # once per graph (A, Â, L), plus the initialisation's
    built.clear()
    monkeypatch.setattr(spectral_nets, "KEPT_OPERATOR_EDGES", 0)
    rebuilt = train_spectral(graphs, k=3, config=config, seed=0).losses
    assert len(built) >= 3 * 40  # at every step
    assert rebuilt == kept

def test_adjacency_edges_link_touching_superpixels_only():
    without = _random_graph(touching=False)[1].toarray()
    with_edges = _random_graph(touching=True)[1].toarray()
    added = (with_edges > without + 1e-7)
    i, j = np.nonzero(added)
    assert len(i) > 0 and np.all(np.abs(i - j) == 1)


def _subspace_angle(a: np.ndarray, b: np.ndarray) -> float:
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))))


@pytest.mark.parametrize("hops", [1, 3])
def test_the_neural_embedding_approaches_the_low_eigenvectors_of_the_laplacian(hops):
    # twelve tight groups of four nodes: L has twelve eigenvalues near 0, then a gap, so the target subspace is sharp
    rng = np.random.default_rng(3)
    x = (np.repeat(rng.normal(scale=3.0, size=(12, 24)), 4, axis=0) + rng.normal(scale=0.3, size=(48, 24)))
    x = x.astype(np.float32)
    a = affinity(x)
    config = SpectralConfig(steps=600, warmup=600, hops=hops)
    trained = train_spectral([Graph(x, a)], k=3, config=config, seed=0)
    with torch.no_grad():
        z = embed(trained.nets, torch.from_numpy(x), graph_operators(a)[0], hops).numpy()
    vectors = np.linalg.eigh(laplacian(a).toarray().astype(np.float64))[1][:, :12]
    assert _subspace_angle(rng.normal(size=z.shape), vectors) > 60
    assert _subspace_angle(z, vectors) < 5
    assert trained.losses[-1] < 0.01 * trained.losses[0]


def test_incremental_centroid_targets_do_not_depend_on_the_graph_order():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    graphs = [centres[rng.integers(0, 3, 50)] + rng.normal(scale=0.5, size=(50, 2)) for _ in range(24)]
    results = []
    for order in (range(24), range(23, -1, -1), rng.permutation(24)):
        targets = IncrementalCentroids(centres + 1.0, np.ones(3), period=8)
        labels = {i: targets.assign(graphs[i]) for i in order}
        results.append([labels[i] for i in range(24)])
        np.testing.assert_allclose(targets.centroids, centres, atol=0.3)
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))


def test_the_dec_target_carries_no_gradient():
    x = torch.randn(20, 4)
    centroids = torch.randn(3, 4, requires_grad=True)
    q = student_t(x, centroids)
    assert q.requires_grad and torch.allclose(q.sum(dim=1), torch.ones(20))
    r = sharpened_target(q)
    assert not r.requires_grad and torch.allclose(r.sum(dim=1), torch.ones(20))


def _repeating_phantom():
    """Dark disks on a bright textured background, the same layout in each quarter of every slice."""
    rng = np.random.default_rng(5)
    tile = np.full((64, 64), 0.75)
    yy, xx = np.mgrid[:64, :64]
    for cy, cx in ((16, 16), (44, 20), (24, 46), (50, 50)):
        tile[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 0.2
    image = np.tile(tile, (2, 2, 2)) + rng.normal(scale=0.04, size=(2, 128, 128))
    return np.clip(image, 0, 1).astype(np.float32), np.tile(tile < 0.5, (2, 2, 2))


@pytest.mark.parametrize("kind", GRAPH_KINDS)
def test_each_region_gives_the_same_structure_the_same_id(kind, tmp_path):
    image, disks = _repeating_phantom()
    options = {"region_nm": 640.0, "superpixel_px": 16, "preset": "tiny"} if kind in ("sccs", "cs2c", "cs2c-spa") \
        else {"region_nm": 640.0, "superpixel_px": 16}
    seg = orgaseg.segment(image, method="baseline", clusterer=kind, k=2, voxel_size=(10.0, 10.0, 10.0),
                          options=options, output=tmp_path / "labels.tif", block_shape=(1, 128, 128))
    labels = orgaseg.open_volume(tmp_path / "labels.tif").read()
    assert labels.shape == image.shape
    ids = {}
    for z in range(2):
        for ys in (slice(0, 64), slice(64, 128)):  # 640 nm regions at 10 nm: the four 64 px quarters
            for xs in (slice(0, 64), slice(64, 128)):
                region, inside = labels[z, ys, xs], disks[z, ys, xs]
                ids.setdefault("disk", set()).add(int(np.bincount(region[inside]).argmax()))
                ids.setdefault("background", set()).add(int(np.bincount(region[~inside]).argmax()))
    assert len(ids["disk"]) == 1 and len(ids["background"]) == 1 and ids["disk"] != ids["background"]
    reused = clusterer_from_dict(json.loads(json.dumps(seg.model.to_dict())))  # the state is plain JSON
    again = orgaseg.segment(image, method="baseline", k=2, voxel_size=(10.0, 10.0, 10.0), centers=reused,
                            block_shape=(1, 128, 128))
    assert np.array_equal(np.asarray(again.labels), labels) and reused.kind == kind


def test_segment_reports_the_graph_networks_training_steps():
    image, _ = _repeating_phantom()
    calls = []
    orgaseg.segment(image, method="baseline", clusterer="sccs", k=2, voxel_size=(10.0, 10.0, 10.0),
                    options={"region_nm": 640.0, "superpixel_px": 16, "steps": 60},
                    progress=lambda description, done, total, **figures: calls.append((description, done, total)))
    training = [(done, total) for description, done, total in calls if description == "training the graph clusterer"]
    assert len(training) >= 2 and training[-1] == (60, 60)  # along the way, not only at the end
    assert all(total == 60 for _, total in training) and [done for done, _ in training] == sorted({d for d, _ in training})
    fitting = [i for i, call in enumerate(calls) if call[0] == "fitting sccs"]
    assert fitting and calls.index(("training the graph clusterer", 60, 60)) < fitting[0]


def test_graph_clusterers_label_the_input_grid_at_a_working_pixel_size():
    image, disks = _repeating_phantom()
    seg = orgaseg.segment(image, method="baseline", clusterer="superpixel-kmeans", k=2, voxel_size=(5.0, 5.0, 5.0),
                          pixel_size=10.0, options={"region_nm": 640.0, "superpixel_px": 16})
    labels = np.asarray(seg.labels)
    assert labels.shape == image.shape
    agreement = max(np.mean((labels == 1) == disks), np.mean((labels == 0) == disks))
    assert agreement > 0.9


def test_graph_clusterers_say_what_is_wrong():
    image, _ = _repeating_phantom()
    with pytest.raises(OrgasegError, match="no option"):
        orgaseg.segment(image, clusterer="sccs", k=2, voxel_size=(10, 10, 10), options={"clusterer.bogus": 1})
    with pytest.raises(OrgasegError, match="superpixels"):
        orgaseg.segment(image[:, :16, :16], clusterer="superpixel-kmeans", k=9, voxel_size=(10, 10, 10),
                        options={"superpixel_px": 400})
    with pytest.raises(OrgasegError, match="preset"):
        orgaseg.segment(image, clusterer="sccs", k=2, voxel_size=(10, 10, 10), options={"preset": "huge"})


def test_every_graph_clusterer_is_in_the_table():
    for kind in GRAPH_KINDS:
        assert CLUSTERERS[kind].working_grid and CLUSTERERS[kind].sample == "blocks"


def test_hops_sets_how_many_graph_convolutions_the_embedding_applies():
    from orgaseg.cluster.spectral_nets import build_networks

    x, a = _random_graph(n=30, d=5)
    nets = build_networks(5, 3, spatial=False)
    x, a_hat = torch.from_numpy(x), graph_operators(a)[0]
    with torch.no_grad():
        w = nets["embed"][0].weight.T @ nets["embed"][1].weight.T @ nets["embed"][2].weight.T  # linear: one map
        for hops in range(4):
            expected = torch.linalg.matrix_power(a_hat.to_dense(), hops) @ x @ w
            assert torch.allclose(embed(nets, x, a_hat, hops), expected, atol=1e-5)
        other = graph_operators(_random_graph(n=30, d=5, seed=1)[1])[0]
        assert torch.allclose(embed(nets, x, other, 0), embed(nets, x, a_hat, 0))  # 0 hops: the edges do not matter
        assert not torch.allclose(embed(nets, x, other, 1), embed(nets, x, a_hat, 1))


def test_hops_is_an_option_kept_with_the_fitted_networks():
    image, disks = _repeating_phantom()
    options = {"region_nm": 640.0, "superpixel_px": 16, "preset": "tiny", "hops": 1}
    seg = orgaseg.segment(image, clusterer="sccs", k=2, voxel_size=(10.0, 10.0, 10.0), options=options,
                          block_shape=(1, 128, 128))
    assert seg.model.state["config"]["hops"] == 1
    labels = np.asarray(seg.labels)
    assert max(np.mean((labels == 1) == disks), np.mean((labels == 0) == disks)) > 0.9
    reused = clusterer_from_dict(json.loads(json.dumps(seg.model.to_dict())))
    again = orgaseg.segment(image, k=2, voxel_size=(10.0, 10.0, 10.0), centers=reused, block_shape=(1, 128, 128))
    assert np.array_equal(np.asarray(again.labels), labels)
    with pytest.raises(OrgasegError, match="hops"):
        orgaseg.segment(image, clusterer="sccs", k=2, voxel_size=(10, 10, 10), options={"hops": 4})


def test_the_default_kappa_links_a_node_to_its_similar_nodes_not_to_every_node():
    # unrelated standardised nodes (channel-averaged squared distance about 2): the papers' kappa = 2 on this
    # distance keeps them linked (e^-1 > 1/alpha), the default drops them (e^-4 < 1/alpha)
    x = np.random.default_rng(0).normal(size=(200, 24)).astype(np.float32)
    x = np.concatenate([x, x[:20] + 0.05])  # twenty near-duplicates: strong edges that set max(A)
    linked_default = np.median((affinity(x).toarray() > 0).sum(axis=1))
    linked_papers = np.median((affinity(x, kappa=2.0).toarray() > 0).sum(axis=1))
    assert linked_papers > 0.9 * len(x)
    assert linked_default < 0.1 * len(x)


@pytest.mark.parametrize("arpack_converges", [True, False])
def test_spectral_partition_of_a_graph_in_many_pieces(monkeypatch, arpack_converges):
    """Disconnected pieces give eigenvalue 0 many times over, which ARPACK may not resolve (seen with a
    sparse affinity and no adjacency edges); the dense solver then gives the partition."""
    import scipy.sparse.linalg

    from orgaseg.cluster.graph_clusterers import spectral_partition

    if not arpack_converges:
        def no_convergence(*args, **kwargs):
            raise scipy.sparse.linalg.ArpackNoConvergence("no convergence", np.zeros(0), np.zeros((0, 0)))

        monkeypatch.setattr(scipy.sparse.linalg, "eigsh", no_convergence)

    pieces, size = 40, 6
    n = pieces * size
    a = np.zeros((n, n), np.float32)
    for p in range(pieces):  # cliques with no edge between them
        block = slice(p * size, (p + 1) * size)
        a[block, block] = 1.0
    np.fill_diagonal(a, 0.0)
    x = np.repeat(np.arange(pieces, dtype=np.float32)[:, None], size, axis=0)
    labels = spectral_partition(Graph(x, a), 3, seed=0)
    assert labels.shape == (n,) and set(np.unique(labels)) <= {0, 1, 2}
    # a clique is never split: every piece lies in one cluster
    assert all(len(np.unique(labels[p * size:(p + 1) * size])) == 1 for p in range(pieces))


def test_a_block_never_takes_the_superpixels_another_thread_cached(monkeypatch):
    from orgaseg.cluster import graph_clusterers

    rng = np.random.default_rng(0)
    options = graph_clusterers.GraphOptions()
    mine, theirs = (rng.random((1, 32, 32, 3), dtype=np.float32) for _ in range(2))
    raw = rng.random((1, 32, 32), dtype=np.float32)
    graph_clusterers._cached_regions(theirs, raw, (20.0, 20.0), options)
    entry_theirs = list(graph_clusterers._last)
    expected = graph_clusterers._cached_regions(mine, raw, (20.0, 20.0), options)
    entry_mine = list(graph_clusterers._last)

    class Switching(list):
        """The cache as another thread may leave it between any two reads: after each read, its block's entry."""

        def __getitem__(self, index):
            value = super().__getitem__(index)
            self[:] = entry_theirs
            return value

    monkeypatch.setattr(graph_clusterers, "_last", Switching(entry_mine))
    assert graph_clusterers._cached_regions(mine, raw, (20.0, 20.0), options) is expected


def test_default_blocks_of_a_graph_clusterer_span_whole_regions(monkeypatch):
    # Deep, narrow default blocks suit the filter bank's 3D context on a near-isotropic volume, but a graph
    # clusterer cuts each plane of a block into regions: a block narrower than a region would cut them short
    # and make the labels follow the block plan.
    from orgaseg.pipeline import runner

    monkeypatch.setattr(runner, "FEATURE_BYTES", 4 * 35 * 24_000)  # a budget a 12 x 96 x 96 volume exceeds
    image, _ = _repeating_phantom()
    image = np.repeat(image, 6, axis=0)[:, 16:112, 16:112]
    voxel = (20.0, 20.0, 20.0)
    options = {"region_nm": 960.0, "superpixel_px": 16}  # regions of 48 x 48 px
    kmeans = orgaseg.segment(image, method="baseline", k=2, voxel_size=voxel, sample_size=10_000)
    assert any(side % 48 for side in kmeans.provenance["blocks"]["shape"][1:])  # a pixel clusterer's blocks
    whole = orgaseg.segment(image, method="baseline", clusterer="superpixel-kmeans", k=2, options=options,
                            voxel_size=voxel, sample_size=image.size, block_shape=image.shape)
    default = orgaseg.segment(image, method="baseline", clusterer="superpixel-kmeans", k=2, options=options,
                              voxel_size=voxel, sample_size=image.size)
    shape = tuple(default.provenance["blocks"]["shape"])
    assert shape[0] < image.shape[0] and all(side % 48 == 0 for side in shape[1:])
    # a clusterer labels the same regions with these blocks as with one block of the whole volume
    reused = orgaseg.segment(image, voxel_size=voxel, centers=whole.model)
    assert reused.provenance["blocks"]["shape"] == list(shape)
    np.testing.assert_array_equal(reused.labels, whole.labels)


@pytest.mark.parametrize("kind", ["spectral", "sccs"])
def test_regions_of_one_superpixel_each_are_refused_with_the_options_to_change(kind):
    image = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    options = {"region_nm": 200.0, "superpixel_px": 400, **({"preset": "tiny"} if kind == "sccs" else {})}
    with pytest.raises(OrgasegError, match=rf"{kind} learns from graphs of superpixels, but every region of the "
                                           r"sample is one superpixel \(\d+ regions\): use smaller superpixels"):
        orgaseg.segment(image, clusterer=kind, k=2, voxel_size=(20.0, 20.0, 20.0), options=options)


def _planned_job(shape, voxel_size, features, pixel_size=None):
    """A graph clusterer's job on a volume of ``shape``, for the block plan only (its encoder never runs)."""
    import types

    from orgaseg.pipeline.resample import WorkingGrid

    encoder = types.SimpleNamespace(fov=80, patch=5, n_features=128, encode=None)  # a MAESTER cpu encoder's geometry
    grid = None if pixel_size is None else WorkingGrid.for_pixel_size(shape, voxel_size, pixel_size)
    extractor = FEATURES[features].build(encoder, grid.working_voxel_size if grid else voxel_size, {}, "cpu")
    volume = types.SimpleNamespace(shape=shape, chunks=None, voxel_size=voxel_size)
    return types.SimpleNamespace(source=types.SimpleNamespace(volume=volume), extractor=extractor, grid=grid,
                                 plane_tile_nm=8960.0)


def test_whole_regions_that_would_blow_the_memory_budget_give_way_to_the_budgets_blocks_with_a_warning():
    from orgaseg.pipeline import runner
    from orgaseg.pipeline.blocks import block_overhead
    from orgaseg.pipeline.tasks import block_halo

    # isotropic 8 nm, 2048-px planes: a 1120-px region leaves room for 3 planes, each reading ~86 planes of
    # the filter bank's context either side (57x the volume's work, 2.2 GiB windows)
    job = _planned_job((256, 2048, 2048), (8.0, 8.0, 8.0), "filter-bank", 10.0)
    with pytest.warns(OrgasegWarning, match=r"regions of 8960 nm \(1120 x 1120 voxels\) do not fit .* would read "
                                            r"windows of 2\.2 GiB .* cut to blocks of 256 x 108 x 137 voxels"):
        block = runner.resolve_block_shape(job)
    job.plane_tile_nm = 2240.0  # regions a quarter as wide leave room for enough planes: whole ones
    assert runner.resolve_block_shape(job) == (43, 280, 280)
    job.plane_tile_nm = None
    assert block == runner.resolve_block_shape(job)  # the pixel clusterers' blocks
    assert block_overhead(job.source.volume.shape, block, block_halo(job.extractor, job.grid)) < 6
    # learned features of one whole 2240-px region would hold 4x the feature budget
    job = _planned_job((512, 2048, 2048), (4.0, 4.0, 4.0), "expand-stride")
    with pytest.warns(OrgasegWarning, match="would hold 4.0 times the feature budget"):
        block = runner.resolve_block_shape(job)
    assert 4 * job.extractor.n_features * np.prod(block) <= runner.FEATURE_BYTES
    # where whole regions cost little more, they are taken: a 600-px plane at 16 nm holds one region
    job = _planned_job((100, 600, 600), (16.0, 16.0, 16.0), "filter-bank")
    assert runner.resolve_block_shape(job)[1:] == (600, 600)
