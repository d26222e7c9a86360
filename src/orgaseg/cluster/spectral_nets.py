"""Neural spectral clustering of superpixel graphs: SCCS and CS²C, as networks, losses and one training loop.

SCCS (Jiang, Sun, Wang, Pei) and CS²C (Jiang & Pei), as this project reads the papers:

- **Spectral embedding** (both): three linear layers ``2q -> 96 -> 48 ->
  u = 12`` (no activations), so the embedding of a node is a fixed function
  of its graph's features: the same weights embed every region, which is
  what makes ids agree across regions. The papers make all three graph
  convolutions (``Z <- Â Z W``); here ``hops`` of them are (default **1**, a
  deviation): on a region's feature graph, which links most pairs of nodes
  (``kappa = 2``), each hop averages a node with much of the region, and
  three hops smooth small classes (mitochondria on vnc) away; one hop keeps
  the preference for low-frequency directions that 0 hops lack (with 0,
  nothing in ``L_spe`` favours any orthonormal projection of the features
  over another). Measured in ``docs/graph-clusterers.md``.
  ``L_spe = ||Z^T Z / n - I||^2 + mu ||offdiag(Z^T L Z / n)||^2``, plus an
  optional ``trace_weight * tr(Z^T L Z / n)`` that prefers low-frequency
  bases. ``Z^T Z / n`` (not ``Z^T Z``) keeps per-node values of order 1 on
  graphs of any size.
- **SCCS clustering head**: an MLP ``12 -> 12 -> k`` with softmax ``P``;
  targets ``P_hat`` from incremental k-means in the spectral space (k-means
  on an anchor graph initialises the centroids; each new graph's nodes take
  their nearest centroid; centroids become running means every 8 graphs);
  ``L = L_spe + gamma1 BCE(P, P_hat) + gamma2 L_smo`` with
  ``L_smo = mean_ij (a_ij - eta)(1 - cos(P_i, P_j)) + nu |mean_i ||P_i||_1 - 1|``.
  (Under a softmax the second term of ``L_smo`` is 0: it is kept as the
  paper writes it.)
- **CS²C spatial branch**: learnable centroids ``mu`` (``k x 2q``)
  initialised by k-means on the nodes' features; Student-t soft assignment
  ``Q`` (``tau = 1``; squared distances averaged over the feature dimensions,
  as the graph affinity); target ``R = Q^2 / f`` row-normalised and
  **detached**; ``L_clu = KL(R || Q)``, ``L_reg = KL(P || R)``;
  ``L = L_sccs + gamma1 L_clu + gamma2 L_reg``. The spectral centroids are
  permuted to agree with the spatial clusters on the anchor graph before
  training, so ``L_reg`` does not fight two arbitrary numberings.

Training starts with ``warmup`` steps of ``L_spe`` alone, so the centroids
are initialised in a spectral space that already means something.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np

from orgaseg.cluster.graph import Graph, laplacian, normalized_adjacency
from orgaseg.threads import one_thread

#: Edges of a pool of graphs up to which training keeps every graph's sparse tensors between steps.
KEPT_OPERATOR_EDGES = 16 * 1024 * 1024

#: Widths of the three graph convolutions (the last is ``u``).
EMBEDDING_WIDTHS = (96, 48, 12)
#: Running-mean update period of the SCCS centroids, in graphs.
CENTROID_PERIOD = 8


@dataclass(frozen=True)
class SpectralConfig:
    """Hyper-parameters of SCCS / CS²C training (defaults: the papers')."""

    steps: int = 600
    warmup: int | None = None  # default: a fifth of the steps
    lr: float = 0.01
    mu: float = 1.0
    trace_weight: float = 0.0
    hops: int = 1  # the papers: 3 (see the module notes)
    gamma1: float = 1.0
    gamma2: float = 0.1
    eta: float = 0.1
    nu: float = 0.1
    spatial: bool = False
    spatial_gamma1: float = 1.0
    spatial_gamma2: float = 1.0
    tau: float = 1.0
    low_lr: float = 1e-4
    low_lr_from: float = 0.6  # CS²C: fraction of the steps after which the learning rate drops

    @property
    def warmup_steps(self) -> int:
        return self.steps // 5 if self.warmup is None else int(self.warmup)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _torch():
    import torch

    return torch


def build_networks(n_in: int, k: int, spatial: bool):
    """The embedding (three linear graph convolutions), the SCCS head and, for CS²C, the spatial centroids."""
    torch = _torch()
    nn = torch.nn
    widths = (n_in, *EMBEDDING_WIDTHS)
    embed = nn.ModuleList([nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])
    head = nn.Sequential(nn.Linear(EMBEDDING_WIDTHS[-1], EMBEDDING_WIDTHS[-1]), nn.ReLU(),
                         nn.Linear(EMBEDDING_WIDTHS[-1], k))
    modules = {"embed": embed, "head": head}
    if spatial:
        modules["centroids"] = nn.ParameterList([nn.Parameter(torch.zeros(k, n_in))])
    return nn.ModuleDict(modules)


def sparse_tensor(a):
    """A scipy sparse matrix as a torch CSR tensor of float32."""
    torch = _torch()
    a = a.tocsr()
    a.sort_indices()
    with warnings.catch_warnings():  # torch calls its CSR support beta; the product used here is long-standing
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        # built from a valid scipy matrix: the invariant checks would only cost time
        return torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int64)),
                                       torch.from_numpy(a.indices.astype(np.int64)),
                                       torch.from_numpy(a.data.astype(np.float32)), a.shape, check_invariants=False)


def graph_operators(a):
    """``(Â, L)`` of a sparse affinity (a scipy sparse matrix), as sparse tensors (see :mod:`orgaseg.cluster.graph`)."""
    return sparse_tensor(normalized_adjacency(a)), sparse_tensor(laplacian(a))


def symmetric_product(a, z):
    """``a @ z`` for a symmetric sparse ``a``, differentiable in ``z``.

    The gradient is ``a @ grad`` too (``a`` is its own transpose), which
    spares autograd the transposed copy of ``a`` it would otherwise build.
    """
    return _symmetric_product_function().apply(a, z)


@functools.cache
def _symmetric_product_function():
    torch = _torch()

    class SymmetricProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, z):
            ctx.a = a
            return a @ z

        @staticmethod
        def backward(ctx, grad):
            return None, ctx.a @ grad

    return SymmetricProduct


def embed(nets, x, a_hat, hops: int):
    """``Z`` of a graph: three linear layers, the last ``hops`` of them graph convolutions (0: a linear map of ``x``)."""
    layers = nets["embed"]
    z = x
    for i, layer in enumerate(layers):
        z = layer(z)
        if i >= len(layers) - hops:
            z = symmetric_product(a_hat, z)
    return z


def soft_assign(nets, z):
    """SCCS's ``P``: softmax of the head."""
    return _torch().softmax(nets["head"](z), dim=1)


def student_t(x, centroids, tau: float = 1.0):
    """CS²C's ``Q``: Student-t similarity to the centroids, rows summing to 1."""
    d = ((x[:, None, :] - centroids[None, :, :]) ** 2).mean(dim=2)
    q = (1.0 + d / tau) ** (-(tau + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def sharpened_target(q):
    """DEC's target ``R = Q^2 / f`` row-normalised, detached (no gradient flows into the target)."""
    r = q ** 2 / q.sum(dim=0, keepdim=True)
    return (r / r.sum(dim=1, keepdim=True)).detach()


def spectral_loss(z, lap, mu: float, trace_weight: float):
    """``L_spe``: orthonormal columns, diagonal ``Z^T L Z``, optionally a small trace."""
    torch = _torch()
    n, u = z.shape
    gram = z.T @ z / n
    orth = ((gram - torch.eye(u, dtype=z.dtype)) ** 2).sum()
    m = z.T @ symmetric_product(lap, z) / n
    off = ((m - torch.diag(torch.diagonal(m))) ** 2).sum()
    return orth + mu * off + trace_weight * torch.trace(m)


def smoothness_loss(p, a, eta: float, nu: float):
    """``L_smo``: affine nodes get similar assignments; a balance term on the assignments' mass.

    The mean over all node pairs of ``(a_ij - eta) (1 - cos_ij)``, from
    closed forms that form no ``n x n`` matrix (``U`` the unit rows of
    ``p``, ``a`` sparse): ``sum_ij a_ij cos_ij = sum(U * (a U))`` and
    ``sum_ij cos_ij = |sum_i U_i|^2``.
    """
    torch = _torch()
    n = p.shape[0]
    unit = torch.nn.functional.normalize(p, dim=1)
    on_edges = a.values().sum() - (unit * symmetric_product(a, unit)).sum()
    everywhere = n * n - unit.sum(dim=0).pow(2).sum()
    return (on_edges - eta * everywhere) / (n * n) + nu * torch.abs(p.abs().sum(dim=1).mean() - 1.0)


def kl(target, q):
    """``KL(target || q)`` averaged over rows."""
    torch = _torch()
    eps = 1e-10
    return (target * (torch.log(target + eps) - torch.log(q + eps))).sum(dim=1).mean()


class IncrementalCentroids:
    """SCCS's targets: nearest centroid in the spectral space; centroids become running means every few graphs.

    Parameters
    ----------
    centroids : ndarray, shape (k, u)
        Initial centroids (k-means of the anchor graph's embedding).
    counts : ndarray, shape (k,)
        Nodes behind each initial centroid (the running means' weights).
    period : int
        Graphs between updates.
    """

    def __init__(self, centroids: np.ndarray, counts: np.ndarray, period: int = CENTROID_PERIOD) -> None:
        self.centroids = np.asarray(centroids, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.float64)
        self.period = period
        self._sums = np.zeros_like(self.centroids)
        self._seen = np.zeros_like(self.counts)
        self._graphs = 0

    def assign(self, z: np.ndarray) -> np.ndarray:
        """Targets of one graph's nodes (nearest centroid), recorded for the next update."""
        z = np.asarray(z, dtype=np.float64)
        nearest = np.argmin(((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=2), axis=1)
        np.add.at(self._sums, nearest, z)
        self._seen += np.bincount(nearest, minlength=len(self.centroids))
        self._graphs += 1
        if self._graphs == self.period:
            self.update()
        return nearest

    def update(self) -> None:
        """Fold the nodes assigned since the last update into the running means."""
        total = self.counts + self._seen
        grown = total > 0
        self.centroids[grown] = ((self.centroids * self.counts[:, None] + self._sums)[grown]
                                 / total[grown][:, None])
        self.counts = total
        self._sums[:] = 0.0
        self._seen[:] = 0.0
        self._graphs = 0


@dataclass
class TrainedSpectral:
    """What :func:`train_spectral` returns: the networks and a log of the losses."""

    nets: object
    losses: list[float] = field(default_factory=list)


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    k = min(k, len(x))
    fit = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    return fit.cluster_centers_.astype(np.float32), fit.labels_


def train_spectral(graphs: list[Graph], k: int, config: SpectralConfig, *, seed: int = 0,
                   progress=None) -> TrainedSpectral:
    """Train SCCS (or CS²C with ``config.spatial``) on superpixel graphs, one graph per step.

    Parameters
    ----------
    graphs : list of Graph
        The sample's graphs (standardised node features and affinities).
    k : int
        Clusters.
    config : SpectralConfig
    seed : int
        Seeds the graph order, the initialisations and the networks.
    progress : callable, optional
        ``progress(description, done, total)``.

    Returns
    -------
    TrainedSpectral
    """
    with one_thread(load_torch=True):
        return _train_spectral(graphs, k, config, seed, progress)


def _train_spectral(graphs: list[Graph], k: int, config: SpectralConfig, seed: int, progress) -> TrainedSpectral:
    from scipy.optimize import linear_sum_assignment

    from orgaseg.progress import report

    torch = _torch()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    features = [torch.from_numpy(g.x) for g in graphs]
    # each graph's sparse tensors (A, Â, L), built once when the pool's edges are few enough to keep them
    # (36 bytes per edge: three CSR tensors), else at every step from the pool's scipy affinities (8 bytes)
    keep = sum(g.a.nnz for g in graphs) <= KEPT_OPERATOR_EDGES
    built: dict[int, tuple] = {}

    def operators(i: int) -> tuple:
        if i in built:
            return built[i]
        tensors = (sparse_tensor(graphs[i].a), *graph_operators(graphs[i].a))
        if keep:
            built[i] = tensors
        return tensors

    nets = build_networks(graphs[0].x.shape[1], k, config.spatial)
    optimizer = torch.optim.Adam(nets.parameters(), lr=config.lr)
    order = rng.integers(0, len(graphs), size=config.steps)
    anchor = int(np.argmax([g.n for g in graphs]))
    with torch.no_grad():  # start with Z^T Z / n near I: at Z = 0 the orthonormality term has no gradient
        z = embed(nets, features[anchor], operators(anchor)[1], config.hops)
        nets["embed"][-1].weight /= z.pow(2).mean().sqrt().clamp_min(1e-12)
    targets: IncrementalCentroids | None = None
    result = TrainedSpectral(nets)
    for step in range(config.steps):
        if step == config.warmup_steps:
            targets, spatial = _initial_centroids(nets, anchor, operators(anchor)[1], graphs, k, config, seed,
                                                  linear_sum_assignment)
            if spatial is not None:
                with torch.no_grad():
                    nets["centroids"][0].copy_(torch.from_numpy(spatial))
        if config.spatial and step == int(config.low_lr_from * config.steps):
            for group in optimizer.param_groups:
                group["lr"] = config.low_lr
        x, (a, a_hat, lap) = features[order[step]], operators(order[step])
        z = embed(nets, x, a_hat, config.hops)
        loss = spectral_loss(z, lap, config.mu, config.trace_weight)
        if targets is not None:
            target = torch.from_numpy(np.eye(k, dtype=np.float32)[targets.assign(z.detach().numpy())])
            p = soft_assign(nets, z)
            loss = loss + config.gamma1 * torch.nn.functional.binary_cross_entropy(
                p.clamp(1e-7, 1 - 1e-7), target) + config.gamma2 * smoothness_loss(p, a, config.eta, config.nu)
            if config.spatial:
                q = student_t(x, nets["centroids"][0], config.tau)
                r = sharpened_target(q)
                loss = loss + config.spatial_gamma1 * kl(r, q) + config.spatial_gamma2 * kl(p, r)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result.losses.append(float(loss.detach()))
        report(progress, "training the graph clusterer", step + 1, config.steps)
    return result


def _initial_centroids(nets, anchor: int, a_hat, graphs: list[Graph], k: int, config: SpectralConfig, seed: int,
                       assign):
    """k-means of the anchor graph's embedding; for CS²C also of the nodes' features, numbered alike."""
    torch = _torch()
    x = torch.from_numpy(graphs[anchor].x)
    with torch.no_grad():
        z = embed(nets, x, a_hat, config.hops).numpy()
    centroids, labels = _kmeans(z, k, seed)
    if len(centroids) < k:  # fewer nodes than clusters on the anchor: spare centroids far away never win
        centroids = np.concatenate([centroids, np.full((k - len(centroids), z.shape[1]), 1e6, np.float32)])
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    if not config.spatial:
        return IncrementalCentroids(centroids, counts), None
    pooled = np.concatenate([g.x for g in graphs])
    spatial, _ = _kmeans(pooled, k, seed)
    if len(spatial) < k:
        spatial = np.concatenate([spatial, pooled[:k - len(spatial)]])
    spatial_labels = np.argmin(((x.numpy()[:, None, :] - spatial[None]) ** 2).sum(axis=2), axis=1)
    agreement = np.zeros((k, k))
    np.add.at(agreement, (labels, spatial_labels), 1.0)
    rows, cols = assign(-agreement)  # spectral centroid rows[i] takes the number of spatial cluster cols[i]
    permuted = np.empty_like(centroids)
    permuted[cols] = centroids[rows]
    permuted_counts = np.empty_like(counts)
    permuted_counts[cols] = counts[rows]
    return IncrementalCentroids(permuted, permuted_counts), spatial.astype(np.float32)


def predict_graph(nets, graph: Graph, *, hops: int, spatial: bool = False, tau: float = 1.0) -> np.ndarray:
    """Cluster ids of a graph's nodes: ``argmax P`` (spectral) or ``argmax Q`` (CS²C's spatial branch)."""
    torch = _torch()
    with torch.no_grad():
        x = torch.from_numpy(graph.x)
        if spatial:
            q = student_t(x, nets["centroids"][0], tau)
            return q.argmax(dim=1).numpy()
        z = embed(nets, x, graph_operators(graph.a)[0], hops)
        return soft_assign(nets, z).argmax(dim=1).numpy()


def nets_to_dict(nets) -> dict:
    """The networks' weights as JSON lists."""
    return {name: value.detach().numpy().tolist() for name, value in nets.state_dict().items()}


def nets_from_dict(state: dict, n_in: int, k: int, spatial: bool):
    """Networks rebuilt from :func:`nets_to_dict`."""
    torch = _torch()
    nets = build_networks(n_in, k, spatial)
    nets.load_state_dict({name: torch.tensor(value, dtype=torch.float32) for name, value in state.items()})
    return nets.eval()
