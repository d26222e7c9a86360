"""k-means and MiniBatch k-means on a sample of per-voxel features, then assignment block by block.

``kmeans`` collects the whole voxel sample and fits scikit-learn's
:class:`~sklearn.cluster.KMeans` on it. ``minibatch-kmeans`` streams: it
keeps only its first ``init_size`` sampled voxels (standardisation and
k-means++ initialisation come from them) and then updates the centres with
each block's sampled voxels as they arrive (scikit-learn's
:class:`~sklearn.cluster.MiniBatchKMeans`), so a sample of any size never
has to fit in memory at once. Both give a :class:`KMeansModel`.

Features are standardised (zero mean, unit variance per feature, statistics
of the sample) before clustering. The fitted :class:`KMeansModel` holds the
standardisation and the centres; it is stored in the provenance record of a
segmentation so another volume can be labelled with the same ids.

Cluster ids are ordered deterministically: by the centres' first feature in
original units (for the filter bank, the smoothed intensity at the finest
scale: cluster 0 is the darkest), ties broken by the following features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orgaseg.cluster.base import ClustererSpec, standardize_sample
from orgaseg.errors import OrgasegError
from orgaseg.labels import smallest_label_dtype
from orgaseg.options import check_whole_number

#: Rows per chunk when assigning labels (bounds the distance matrix in memory).
ASSIGN_CHUNK = 262_144


@dataclass
class KMeansModel:
    """Fitted k-means: standardisation plus centres in standardised units.

    Attributes
    ----------
    centers : ndarray, shape (k, n_features)
        Cluster centres in standardised feature space, ordered.
    mean, scale : ndarray, shape (n_features,)
        Standardisation: ``(x - mean) / scale``.
    inertia : float
        Mean squared distance of the sample to its nearest centre.
    seed : int
        Seed of the fit.
    kind : str
        The clusterer that fitted it (``kmeans`` or ``minibatch-kmeans``); both label alike.
    """

    centers: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    inertia: float = float("nan")
    seed: int = 0
    kind: str = "kmeans"
    needs_raw: bool = field(default=False, init=False, repr=False)
    affine_scores: bool = field(default=True, init=False, repr=False)

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.centers.shape[1])

    def standardize(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float32) - self.mean) / self.scale

    def predict(self, features: np.ndarray, raw: np.ndarray | None = None) -> np.ndarray:
        """Nearest-centre id for every feature vector.

        Parameters
        ----------
        features : ndarray, shape (..., n_features)
        raw : ignored
            (k-means labels each voxel from its features alone.)

        Returns
        -------
        ndarray, shape (...), the smallest unsigned dtype that holds ``k`` ids
        """
        return self.labels_from_scores(self.scores(features))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """``2 x.c - |c|^2`` per centre (standardised units), shape ``(..., k)``: the largest is the nearest centre.

        ``|x - c|^2 = |x|^2 - (2 x.c - |c|^2)``, and ``|x|^2`` is the same for every
        centre. The scores are affine in the features, so scores interpolated
        between voxels pick the centre nearest to the interpolated features:
        the runner interpolates ``k`` scores instead of every feature when it
        maps a working grid back to the input grid.
        """
        features = np.asarray(features)
        if features.shape[-1] != self.n_features:
            raise OrgasegError(
                f"features have {features.shape[-1]} channels but the k-means centres have "
                f"{self.n_features}: were the centres fitted with another method or configuration?"
            )
        flat = features.reshape(-1, self.n_features)
        out = np.empty((flat.shape[0], self.k), dtype=np.float32)
        centers = self.centers.astype(np.float32)
        center_sq = (centers * centers).sum(axis=1)
        for start in range(0, flat.shape[0], ASSIGN_CHUNK):
            x = self.standardize(flat[start : start + ASSIGN_CHUNK])
            out[start : start + ASSIGN_CHUNK] = 2.0 * (x @ centers.T) - center_sq
        return out.reshape(features.shape[:-1] + (self.k,))

    def labels_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """The id of the highest score, in the smallest unsigned dtype that holds ``k`` ids."""
        return np.argmax(scores, axis=-1).astype(smallest_label_dtype(self.k))

    def to_dict(self) -> dict:
        """JSON-serialisable state (for provenance files)."""
        return {
            "kind": self.kind,
            "k": self.k,
            "centers": self.centers.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "inertia": float(self.inertia),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, state: dict) -> "KMeansModel":
        try:
            return cls(
                centers=np.asarray(state["centers"], dtype=np.float32),
                mean=np.asarray(state["mean"], dtype=np.float32),
                scale=np.asarray(state["scale"], dtype=np.float32),
                inertia=float(state.get("inertia", float("nan"))),
                seed=int(state.get("seed", 0)),
                kind=str(state.get("kind", "kmeans")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise OrgasegError(f"not a k-means state (centers, mean, scale expected): {err}") from None


def fit_kmeans(sample: np.ndarray, k: int, *, seed: int = 0, n_init: int = 3, max_iter: int = 300) -> KMeansModel:
    """Fit k-means (k-means++ initialisation, seeded) on a sample of features.

    Parameters
    ----------
    sample : ndarray, shape (n_samples, n_features)
        Feature vectors, one per sampled voxel.
    k : int
        Number of clusters.
    seed : int
        Seed of the initialisation; the same sample and seed give the same model.
    n_init : int
        Number of initialisations; the best (lowest inertia) is kept.
    max_iter : int
        Iterations per initialisation.

    Returns
    -------
    KMeansModel

    Raises
    ------
    OrgasegError
        A sample that is not a non-empty 2D array of finite values, K below 1 or above
        the number of samples, or ``seed``, ``n_init`` or ``max_iter`` that is not a
        whole number in range.
    """
    from sklearn.cluster import KMeans

    # scikit-learn's own refusals name its parameters (random_state), not these
    seed = check_whole_number(seed, "seed")
    n_init, max_iter = check_whole_number(n_init, "n_init", 1), check_whole_number(max_iter, "max_iter", 1)
    sample, mean, scale, standardized = _standardized_sample(sample, k)
    model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter, random_state=seed)
    model.fit(standardized)
    return _ordered_model(model.cluster_centers_, mean, scale, float(model.inertia_) / sample.shape[0], seed, "kmeans")


def _standardized_sample(sample: np.ndarray, k: int):
    """Checks a sample for K; returns it, its standardisation and the standardised sample."""
    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim != 2 or sample.shape[0] == 0:
        raise OrgasegError(f"k-means needs a non-empty (n_samples, n_features) sample, got shape {sample.shape}")
    if k < 1:
        raise OrgasegError(f"K must be at least 1, got {k}")
    if k > sample.shape[0]:
        raise OrgasegError(f"K = {k} is larger than the sample ({sample.shape[0]} voxels): use a smaller K")
    if not np.isfinite(sample).all():
        raise OrgasegError("the feature sample contains NaN or infinite values")
    mean, scale, standardized = standardize_sample(sample, k)
    return sample, mean, scale, standardized


def _ordered_model(centers, mean, scale, inertia: float, seed: int, kind: str) -> KMeansModel:
    """A :class:`KMeansModel` whose ids are ordered by the centres' features in original units."""
    centers = np.asarray(centers, dtype=np.float32)
    original = centers * scale + mean
    order = np.lexsort(original.T[::-1])  # first feature is the primary key
    return KMeansModel(centers=centers[order], mean=mean.astype(np.float32), scale=scale.astype(np.float32),
                       inertia=inertia, seed=seed, kind=kind)


class KMeansFit:
    """Collects the voxel sample, then fits :func:`fit_kmeans` on all of it.

    The sample's rows are put in a canonical (lexicographic) order first, so
    the model does not depend on the order blocks delivered them (the block
    shape, the executor): k-means++ picks rows by position.
    """

    def __init__(self, k: int, *, seed: int = 0, n_init: int = 3, max_iter: int = 300) -> None:
        self.k, self.seed, self.n_init, self.max_iter = int(k), seed, int(n_init), int(max_iter)
        self.pieces: list[np.ndarray] = []

    def add(self, features: np.ndarray, raw: np.ndarray | None = None) -> None:
        self.pieces.append(np.asarray(features, dtype=np.float32))

    def finish(self, progress=None) -> KMeansModel:
        if not self.pieces:
            raise OrgasegError("k-means got an empty sample")
        sample = np.concatenate(self.pieces)
        self.pieces = []
        sample = sample[np.lexsort(sample.T[::-1])]
        return fit_kmeans(sample, self.k, seed=self.seed, n_init=self.n_init, max_iter=self.max_iter)


class MiniBatchKMeansFit:
    """MiniBatch k-means over a streamed sample.

    The first ``init_size`` voxels fix the standardisation and seed the
    k-means++ initialisation (``n_init`` tries); every later piece updates the
    centres in mini-batches of ``batch_size``. Memory: ``init_size`` voxels.
    """

    def __init__(self, k: int, *, seed: int = 0, init_size: int = 200_000, batch_size: int = 4096,
                 n_init: int = 3) -> None:
        self.k, self.seed = int(k), seed
        self.init_size, self.batch_size, self.n_init = int(init_size), int(batch_size), int(n_init)
        if self.init_size < self.k or self.batch_size < 1:
            raise OrgasegError(f"minibatch-kmeans needs init_size >= K ({self.k}) and batch_size >= 1")
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.model = None
        self.mean = self.scale = None

    def add(self, features: np.ndarray, raw: np.ndarray | None = None) -> None:
        features = np.asarray(features, dtype=np.float32)
        if self.model is None:
            self.buffer.append(features)
            self.buffered += len(features)
            if self.buffered >= self.init_size:
                self._start()
            return
        if not np.isfinite(features).all():
            raise OrgasegError("the feature sample contains NaN or infinite values")
        standardized = (features - self.mean) / self.scale
        for start in range(0, len(standardized), self.batch_size):
            self.model.partial_fit(standardized[start : start + self.batch_size])

    def _start(self) -> None:
        from sklearn.cluster import MiniBatchKMeans

        sample, self.mean, self.scale, standardized = _standardized_sample(np.concatenate(self.buffer), self.k)
        self.buffer, self.buffered = [], 0
        self.model = MiniBatchKMeans(n_clusters=self.k, init="k-means++", n_init=self.n_init,
                                     batch_size=self.batch_size, random_state=self.seed)
        self.model.fit(standardized)  # initialisation and first passes on the buffered voxels
        self._first = standardized[: min(len(standardized), 100_000)]

    def finish(self, progress=None) -> KMeansModel:
        if self.model is None:
            if not self.buffer:
                raise OrgasegError("minibatch-kmeans got an empty sample")
            self._start()  # the whole sample fitted in the initial buffer
        inertia = float(self.model.score(self._first)) * -1.0 / len(self._first)
        return _ordered_model(self.model.cluster_centers_, self.mean, self.scale, inertia, self.seed,
                              "minibatch-kmeans")


KMEANS = ClustererSpec(
    name="kmeans",
    summary="k-means (k-means++, seeded, best of n_init) on a standardised voxel sample",
    start_fit=KMeansFit,
    from_dict=KMeansModel.from_dict,
    options={"n_init": "initialisations, the best is kept (default 3)",
             "max_iter": "iterations per initialisation (default 300)"},
)

MINIBATCH_KMEANS = ClustererSpec(
    name="minibatch-kmeans",
    summary="MiniBatch k-means streamed over the sample's blocks (memory: init_size voxels)",
    start_fit=MiniBatchKMeansFit,
    from_dict=KMeansModel.from_dict,
    options={"init_size": "voxels that fix the standardisation and initialisation (default 200000)",
             "batch_size": "voxels per centre update (default 4096)",
             "n_init": "initialisations on the first voxels (default 3)"},
    default_sample_size=2_000_000,
)
