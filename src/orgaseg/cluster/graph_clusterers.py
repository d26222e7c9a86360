"""Clusterers of superpixel graphs: SCCS, CS²C (spectral and spatial assignments) and two baselines.

All five cut every slice of a block into regions of a fixed physical side
and each region into SLIC superpixels on the working grid
(:mod:`orgaseg.cluster.superpixels`), describe a superpixel by ``[mean ||
std]`` of its pixels' features, standardised with statistics of the fit's
sample, and give every pixel of a superpixel its superpixel's label. They
fit on whole blocks of the working grid (``sample = "blocks"``,
``working_grid = True``), so superpixels never straddle a written block
edge.

- ``superpixel-kmeans``: k-means of the superpixels' features (the floor).
- ``spectral``: classical spectral clustering of each region's graph
  (the ``k`` lowest eigenvectors of its normalised Laplacian by ARPACK,
  rows normalised, k-means), region ids made consistent by Hungarian
  matching of each region's cluster means to reference means (k-means of
  the fit's regional cluster means).
- ``sccs``: neural spectral embedding + clustering head, trained on the
  fit's graphs (:mod:`orgaseg.cluster.spectral_nets`); the same networks
  label every region, so ids agree across regions by construction.
- ``cs2c`` / ``cs2c-spa``: SCCS plus CS²C's spatial (DEC) branch, labelled by
  the spectral head or by the spatial centroids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orgaseg.cluster.base import ClustererSpec, standardize_sample
from orgaseg.cluster.graph import DEFAULT_ALPHA, DEFAULT_KAPPA, Graph, affinity, laplacian
from orgaseg.cluster.superpixels import (DEFAULT_COMPACTNESS, DEFAULT_REGION_NM, DEFAULT_SUPERPIXEL_PX,
                                         RegionSuperpixels, block_superpixels, paint)
from orgaseg.errors import OrgasegError
from orgaseg.labels import smallest_label_dtype
from orgaseg.progress import ProgressCallback
from orgaseg.threads import one_thread

#: Training length per preset (SCCS; CS²C trains 5/6 of it, as the papers: 6000 and 3000 + 2000 steps).
PRESET_STEPS = {"paper": 6000, "cpu": 600, "tiny": 300}

#: The share of :data:`PRESET_STEPS` that CS²C (either head) trains.
SPATIAL_SHARE = 5 / 6


def preset_steps(kind: str, preset: str) -> int:
    """Training steps of ``preset`` for the clusterer ``kind``."""
    return int(PRESET_STEPS[preset] * (SPATIAL_SHARE if kind in ("cs2c", "cs2c-spa") else 1))


def _preset_help(kind: str) -> str:
    """The ``preset`` option's help for ``kind``, with its own step counts."""
    steps = {name: preset_steps(kind, name) for name in PRESET_STEPS}
    return f"training length: paper ({steps['paper']} steps), cpu ({steps['cpu']}, default) or tiny ({steps['tiny']})"


_GRAPH_OPTIONS = {
    "region_nm": f"side of the square regions graphs are built on, in nm (default {DEFAULT_REGION_NM:g}: 560 px at 16 nm)",
    "superpixel_px": f"working pixels per SLIC superpixel (default {DEFAULT_SUPERPIXEL_PX})",
    "compactness": f"SLIC compactness on intensities in 0..1 (default {DEFAULT_COMPACTNESS})",
    "kappa": f"RBF width on dimension-averaged squared distances (default {DEFAULT_KAPPA:g})",
    "alpha": f"sparsification: drop edges below max/alpha (default {DEFAULT_ALPHA:g})",
    "adjacency": "weight of the edges between touching superpixels, 0 = none (default 1)",
}
_NEURAL_OPTIONS = {
    "preset": _preset_help("sccs"),  # each clusterer's own counts: see _spec
    "steps": "training steps, one graph each (overrides the preset)",
    "trace_weight": "weight of the trace term preferring low-frequency bases (default 0)",
    "hops": "graph convolutions among the embedding's three linear layers, 0 = a linear map of the node features "
            "(default 1; the papers: 3)",
}


@dataclass(frozen=True)
class GraphOptions:
    """How regions, superpixels and graphs are built (shared by fit and prediction)."""

    region_nm: float = DEFAULT_REGION_NM
    superpixel_px: float = DEFAULT_SUPERPIXEL_PX
    compactness: float = DEFAULT_COMPACTNESS
    kappa: float = DEFAULT_KAPPA
    alpha: float = DEFAULT_ALPHA
    adjacency: float = 1.0

    @classmethod
    def from_options(cls, options: dict) -> "GraphOptions":
        return cls(**{name: float(options[name]) for name in cls.__dataclass_fields__ if name in options})

    def regions(self, features: np.ndarray, raw: np.ndarray, voxel_size) -> list[RegionSuperpixels]:
        return _cached_regions(features, raw, (float(voxel_size[1]), float(voxel_size[2])), self)

    def graph(self, region: RegionSuperpixels, mean: np.ndarray, scale: np.ndarray) -> Graph:
        x = ((region.features - mean) / scale).astype(np.float32)
        return Graph(x, affinity(x, kappa=self.kappa, alpha=self.alpha, touching=region.touching,
                                 adjacency_weight=self.adjacency))


# The runner hands the same block to the fit of every K in turn: cut it into superpixels once. One tuple,
# replaced whole and read once, so that a thread never takes another block's superpixels.
_last: list[tuple | None] = [None]


def _cached_regions(features, raw, pixel_size: tuple[float, float], options: GraphOptions) -> list[RegionSuperpixels]:
    key = (pixel_size, options.region_nm, options.superpixel_px, options.compactness)
    last = _last[0]
    if last is not None and last[0] is features and last[1] == key:
        return last[2]
    regions = block_superpixels(features, raw, pixel_size, region_nm=options.region_nm,
                                superpixel_px=options.superpixel_px, compactness=options.compactness)
    _last[0] = (features, key, regions)
    return regions


class GraphFit:
    """Collects the superpixels of the sample's blocks, then fits (shared by every graph clusterer)."""

    def __init__(self, kind: str, k: int, seed: int, options: dict) -> None:
        if int(k) < 2:
            raise OrgasegError(f"{kind} needs K >= 2, got {k}")
        known = set(_GRAPH_OPTIONS) | set(_NEURAL_OPTIONS)
        unknown = set(options) - known
        if unknown:
            raise OrgasegError(f"{kind} has no option {', '.join(sorted(unknown))}; it takes {', '.join(sorted(known))}")
        self.kind, self.k, self.seed = kind, int(k), int(seed)
        self.graph_options = GraphOptions.from_options(options)
        self.options = dict(options)
        self.regions: list[RegionSuperpixels] = []

    def add(self, features: np.ndarray, raw: np.ndarray, voxel_size) -> None:
        for region in self.graph_options.regions(features, raw, voxel_size):
            # keep what the graph needs, not the pixel labels
            self.regions.append(RegionSuperpixels(region.z, region.window, np.empty((0, 0), np.int32),
                                                  region.features, region.touching))

    def finish(self, progress: ProgressCallback | None = None) -> GraphClusterer:
        """The fitted clusterer; ``progress`` (optional) reports the networks' training steps (sccs, cs2c)."""
        nodes = sum(r.n for r in self.regions)
        if nodes < self.k:
            raise OrgasegError(f"{self.kind} with K = {self.k} needs at least {self.k} superpixels, but the sample "
                               f"holds {nodes}: use a smaller K, smaller superpixels or a larger sample")
        pooled = np.concatenate([r.features for r in self.regions])
        mean, scale, standardized = standardize_sample(pooled, self.k, unit="superpixel features")
        model = GraphClusterer(kind=self.kind, k=self.k, n_features=pooled.shape[1] // 2,
                               graph_options=self.graph_options, mean=mean.astype(np.float32), scale=scale,
                               seed=self.seed, options=self.options)
        graphs = [self.graph_options.graph(r, model.mean, model.scale) for r in self.regions if r.n >= 2]
        if not graphs and _FITTERS[self.kind] is not _fit_superpixel_kmeans:  # it alone reads no graph
            raise OrgasegError(f"{self.kind} learns from graphs of superpixels, but every region of the sample is one "
                               f"superpixel ({len(self.regions)} regions): use smaller superpixels (superpixel_px) or "
                               "larger regions (region_nm)")
        _FITTERS[self.kind](model, graphs, standardized, progress=progress)
        return model


@dataclass
class GraphClusterer:
    """A fitted graph clusterer (any of the five kinds); labels blocks on the working grid."""

    kind: str
    k: int
    n_features: int
    graph_options: GraphOptions
    mean: np.ndarray
    scale: np.ndarray
    seed: int = 0
    options: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    needs_raw: bool = field(default=True, init=False)
    working_grid: bool = field(default=True, init=False)
    _nets: Any = field(default=None, init=False, repr=False)

    def predict(self, features: np.ndarray, raw: np.ndarray | None = None, *, voxel_size=None) -> np.ndarray:
        """Labels of the working voxels of a block (``features (z, y, x, q)``, ``raw (z, y, x)``)."""
        if raw is None or voxel_size is None:
            raise OrgasegError(f"{self.kind} labels superpixels: it needs the block's intensities and voxel size")
        if features.shape[-1] != self.n_features:
            raise OrgasegError(f"this {self.kind} clusterer was fitted on {self.n_features} feature channels, "
                               f"the block has {features.shape[-1]}")
        regions = self.graph_options.regions(features, raw, voxel_size)
        # eigensolver, k-means and networks on one thread: the same labels under every executor
        with one_thread(load_torch=_ASSIGNERS[self.kind] is _assign_neural):
            node_labels = [self.assign(self.graph_options.graph(r, self.mean, self.scale)) if r.n else
                           np.zeros(0, np.int64) for r in regions]
        return paint(regions, node_labels, raw.shape, smallest_label_dtype(self.k))

    @property
    def plane_tile_nm(self) -> float:
        """Side of the square regions each plane of a block is cut into (default blocks span whole ones)."""
        return self.graph_options.region_nm

    def assign(self, graph: Graph) -> np.ndarray:
        """Cluster id of each node of a graph."""
        return _ASSIGNERS[self.kind](self, graph)

    @property
    def nets(self):
        if self._nets is None:
            from orgaseg.cluster.spectral_nets import nets_from_dict

            self._nets = nets_from_dict(self.state["nets"], 2 * self.n_features, self.k,
                                        spatial=self.kind in ("cs2c", "cs2c-spa"))
        return self._nets

    def to_dict(self) -> dict:
        return {"kind": self.kind, "k": self.k, "n_features": self.n_features,
                "graph_options": dict(self.graph_options.__dict__), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "seed": self.seed, "options": self.options, "state": self.state}

    @classmethod
    def from_dict(cls, state: dict) -> "GraphClusterer":
        try:
            return cls(kind=state["kind"], k=int(state["k"]), n_features=int(state["n_features"]),
                       graph_options=GraphOptions(**state["graph_options"]),
                       mean=np.asarray(state["mean"], np.float32), scale=np.asarray(state["scale"], np.float32),
                       seed=int(state.get("seed", 0)), options=dict(state.get("options", {})),
                       state=dict(state.get("state", {})))
        except (KeyError, TypeError, ValueError) as err:
            raise OrgasegError(f"not a saved {state.get('kind', 'graph')} clusterer: {err}") from None


# -- the five kinds: how each fits and assigns ------------------------------------------------------------

def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d = (x ** 2).sum(1)[:, None] - 2.0 * x @ centers.T + (centers ** 2).sum(1)[None, :]
    return np.argmin(d, axis=1)


def _kmeans_centers(x: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x, sample_weight=weights).cluster_centers_


def _fit_superpixel_kmeans(model: GraphClusterer, graphs: list[Graph], pooled: np.ndarray, progress=None) -> None:
    model.state = {"centers": _kmeans_centers(pooled, model.k, model.seed).tolist()}


def _assign_superpixel_kmeans(model: GraphClusterer, graph: Graph) -> np.ndarray:
    return _nearest(graph.x, np.asarray(model.state["centers"], np.float32))


def spectral_partition(graph: Graph, k: int, seed: int) -> np.ndarray:
    """Classical spectral clustering of one graph (normalised Laplacian, ARPACK, rows normalised, k-means)."""
    import scipy.sparse
    from scipy.linalg import eigh
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh
    from sklearn.cluster import KMeans

    k = min(k, graph.n)
    lap = laplacian(graph.a).astype(np.float64)
    vectors = None
    if graph.n > k + 1:  # the smallest eigenvalues of L are the largest of 2I - L (eigenvalues of L lie in [0, 2])
        shifted = 2.0 * scipy.sparse.identity(graph.n, format="csr") - lap
        v0 = np.random.default_rng(seed).standard_normal(graph.n)
        try:
            vectors = eigsh(shifted, k=k, which="LA", v0=v0)[1]
        except ArpackNoConvergence:
            # a graph of many disconnected pieces (a sparse affinity without adjacency edges) has a
            # multiple eigenvalue 0 that ARPACK may not resolve; the dense solver below always does
            pass
    if vectors is None:
        vectors = eigh(lap.toarray(), subset_by_index=[0, k - 1])[1]
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(vectors)


def _cluster_means(graph: Graph, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, graph.x.shape[1]))
    np.add.at(sums, labels, graph.x)
    return sums / np.maximum(counts, 1)[:, None], counts


def _fit_spectral(model: GraphClusterer, graphs: list[Graph], pooled: np.ndarray, progress=None) -> None:
    means, weights = [], []
    for i, graph in enumerate(graphs):
        m, c = _cluster_means(graph, spectral_partition(graph, model.k, model.seed + i), model.k)
        means.append(m[c > 0])
        weights.append(c[c > 0])
    means = np.concatenate(means).astype(np.float32)
    if len(means) < model.k:
        raise OrgasegError(f"spectral with K = {model.k} found only {len(means)} regional clusters in the sample")
    reference = _kmeans_centers(means, model.k, model.seed, np.concatenate(weights))
    model.state = {"reference_means": reference.tolist()}


def _assign_spectral(model: GraphClusterer, graph: Graph) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    labels = spectral_partition(graph, model.k, model.seed)
    means, counts = _cluster_means(graph, labels, model.k)
    reference = np.asarray(model.state["reference_means"], np.float64)
    present = np.flatnonzero(counts > 0)
    cost = ((means[present, None, :] - reference[None]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    lookup = np.zeros(model.k, dtype=np.int64)
    lookup[present[rows]] = cols
    return lookup[labels]


def _neural_config(model: GraphClusterer):
    from orgaseg.cluster.spectral_nets import SpectralConfig

    preset = str(model.options.get("preset", "cpu"))
    if preset not in PRESET_STEPS:
        raise OrgasegError(f"unknown preset {preset!r} for {model.kind}; known: {', '.join(PRESET_STEPS)}")
    spatial = model.kind in ("cs2c", "cs2c-spa")
    steps = int(model.options.get("steps", preset_steps(model.kind, preset)))
    if steps < 2:
        raise OrgasegError(f"{model.kind} needs at least 2 training steps, got {steps}")
    hops = int(model.options.get("hops", SpectralConfig.hops))
    if not 0 <= hops <= 3:
        raise OrgasegError(f"{model.kind}: hops is the number of graph convolutions, 0 to 3; got {hops}")
    return SpectralConfig(steps=steps, spatial=spatial, trace_weight=float(model.options.get("trace_weight", 0.0)),
                          hops=hops, gamma2=1.0 if spatial else 0.1)


def _fit_neural(model: GraphClusterer, graphs: list[Graph], pooled: np.ndarray, progress=None) -> None:
    from orgaseg.cluster.spectral_nets import nets_to_dict, train_spectral

    config = _neural_config(model)
    trained = train_spectral(graphs, model.k, config, seed=model.seed, progress=progress)
    model._nets = trained.nets.eval()
    model.state = {"nets": nets_to_dict(trained.nets), "config": config.to_dict(),
                   "final_loss": float(np.mean(trained.losses[-20:])),
                   "losses": [float(f"{loss:.4g}") for loss in trained.losses]}


def _assign_neural(model: GraphClusterer, graph: Graph) -> np.ndarray:
    from orgaseg.cluster.spectral_nets import predict_graph

    # the hops the networks were trained with (states saved before the option existed: the papers' 3)
    hops = int(model.state.get("config", {}).get("hops", 3))
    return predict_graph(model.nets, graph, spatial=model.kind == "cs2c-spa", hops=hops)


_FITTERS = {"superpixel-kmeans": _fit_superpixel_kmeans, "spectral": _fit_spectral, "sccs": _fit_neural,
            "cs2c": _fit_neural, "cs2c-spa": _fit_neural}
_ASSIGNERS = {"superpixel-kmeans": _assign_superpixel_kmeans, "spectral": _assign_spectral, "sccs": _assign_neural,
              "cs2c": _assign_neural, "cs2c-spa": _assign_neural}


#: The two ways of labelling one trained CS²C (its spectral head, its spatial centroids): a state saved as
#: either reads back as the other.
CS2C_HEADS = {"cs2c", "cs2c-spa"}


def _spec(name: str, summary: str, neural: bool) -> ClustererSpec:
    def from_dict(state: dict) -> GraphClusterer:
        if {state.get("kind"), name} == CS2C_HEADS:
            state = {**state, "kind": name}
        return GraphClusterer.from_dict(state)

    return ClustererSpec(
        name=name, summary=summary,
        start_fit=lambda k, *, seed=0, **options: GraphFit(name, k, seed, options),
        from_dict=from_dict,
        options={**_GRAPH_OPTIONS, **({**_NEURAL_OPTIONS, "preset": _preset_help(name)} if neural else {})},
        sample="blocks", default_sample_size=50_000_000, working_grid=True,
        plane_tile_nm=lambda options: GraphOptions.from_options(options).region_nm,
    )


SUPERPIXEL_KMEANS = _spec("superpixel-kmeans", "k-means of SLIC superpixels' [mean || std] features", False)
SPECTRAL = _spec("spectral", "classical spectral clustering of each region's superpixel graph, ids matched by "
                 "Hungarian assignment", False)
SCCS = _spec("sccs", "SCCS: neural spectral embedding + clustering head on superpixel graphs", True)
CS2C = _spec("cs2c", "CS²C: SCCS plus a spatial (DEC) branch; the spectral head's ids", True)
CS2C_SPA = _spec("cs2c-spa", "CS²C labelled by its spatial (DEC) centroids", True)
GRAPH_CLUSTERERS = (SUPERPIXEL_KMEANS, SPECTRAL, SCCS, CS2C, CS2C_SPA)
