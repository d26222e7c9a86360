"""k-means on a sample of per-voxel features, then assignment block by block.

Features are standardised (zero mean, unit variance per feature, statistics
of the sample) before clustering. The fitted :class:`KMeansModel` holds the
standardisation and the centres; it is stored in the provenance record of a
segmentation so another volume can be labelled with the same ids.

Cluster ids are ordered deterministically: by the centres' first feature in
original units (for the filter bank, the smoothed intensity at the finest
scale: cluster 0 is the darkest), ties broken by the following features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orgaseg.errors import OrgasegError
from orgaseg.labels import smallest_label_dtype

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
    """

    centers: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    inertia: float = float("nan")
    seed: int = 0

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.centers.shape[1])

    def standardize(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float32) - self.mean) / self.scale

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Nearest-centre id for every feature vector.

        Parameters
        ----------
        features : ndarray, shape (..., n_features)

        Returns
        -------
        ndarray, shape (...), the smallest unsigned dtype that holds ``k`` ids
        """
        features = np.asarray(features)
        if features.shape[-1] != self.n_features:
            raise OrgasegError(
                f"features have {features.shape[-1]} channels but the k-means centres have "
                f"{self.n_features}: were the centres fitted with another method or configuration?"
            )
        flat = features.reshape(-1, self.n_features)
        labels = np.empty(flat.shape[0], dtype=smallest_label_dtype(self.k))
        centers = self.centers.astype(np.float32)
        center_sq = (centers * centers).sum(axis=1)
        for start in range(0, flat.shape[0], ASSIGN_CHUNK):
            x = self.standardize(flat[start : start + ASSIGN_CHUNK])
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin
            labels[start : start + ASSIGN_CHUNK] = np.argmin(center_sq - 2.0 * (x @ centers.T), axis=1)
        return labels.reshape(features.shape[:-1])

    def to_dict(self) -> dict:
        """JSON-serialisable state (for provenance files)."""
        return {
            "kind": "kmeans",
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
    """
    from sklearn.cluster import KMeans

    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim != 2 or sample.shape[0] == 0:
        raise OrgasegError(f"k-means needs a non-empty (n_samples, n_features) sample, got shape {sample.shape}")
    if k < 1:
        raise OrgasegError(f"K must be at least 1, got {k}")
    if k > sample.shape[0]:
        raise OrgasegError(f"K = {k} is larger than the sample ({sample.shape[0]} voxels): use a smaller K")
    if not np.isfinite(sample).all():
        raise OrgasegError("the feature sample contains NaN or infinite values")
    mean = sample.mean(axis=0)
    scale = sample.std(axis=0)
    scale[scale < 1e-12] = 1.0  # constant features stay constant (0) instead of dividing by zero
    standardized = (sample - mean) / scale
    distinct = np.unique(standardized, axis=0).shape[0]
    if distinct < k:
        raise OrgasegError(
            f"the sample has only {distinct} distinct feature vectors, fewer than K = {k}: "
            "is the volume (or the masked region) nearly constant?"
        )
    model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter, random_state=seed)
    model.fit(standardized)
    centers = model.cluster_centers_.astype(np.float32)
    original = centers * scale + mean
    order = np.lexsort(original.T[::-1])  # first feature is the primary key
    return KMeansModel(
        centers=centers[order],
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        inertia=float(model.inertia_) / sample.shape[0],
        seed=seed,
    )
