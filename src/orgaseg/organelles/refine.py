"""Refining named clusters with the same clicks: a light classifier on the segmentation's own features.

The label-free features hold more than k-means reads out of them. With
``--refine`` the annotated voxels train a scikit-learn classifier (logistic
regression, a small neural network or a random forest) on the dense features the segmentation
clustered, computed through the same stages (rebuilt from its provenance by
:mod:`orgaseg.organelles.segmentation_features`), plus the cluster each voxel fell in (one-hot). Clicks come in equal
numbers per class, not in the classes' proportions, so the class frequencies
are then re-estimated on unannotated voxels (:func:`estimate_priors`) and the
classifier predicts under them (logistic regression and the network; a forest's vote fractions
are too coarse for the estimate, so by default it keeps the clicks'). The fitted :class:`RefinedClassifier` labels
every voxel block by block through the block runner, like a clusterer. Its state goes into the provenance (logistic
regression and the network: their weights; a forest: a file beside the output named there),
so another volume segmented with the same clusterer gets the same treatment.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orgaseg.cluster import Clusterer, clusterer_from_dict
from orgaseg.errors import OrgasegError, arg
from orgaseg.features.context import DEFAULT_CONTEXT_PX, parse_context
from orgaseg.io.partial import atomic_path
from orgaseg.io.provenance import to_jsonable
from orgaseg.labels import smallest_label_dtype
from orgaseg.organelles.segmentation_features import SegmentationJob, blocks_holding
from orgaseg.pipeline.cost import estimate_cost
from orgaseg.pipeline.runner import plan_blocks
from orgaseg.threads import one_thread

#: Classifiers ``--classifier`` offers.
CLASSIFIERS = ("logistic", "mlp", "forest")
#: Rows classified at a time (bounds the design matrix in memory).
PREDICT_CHUNK = 262_144
#: Annotated voxels per name the classifier trains on at most (scribbles can annotate millions).
MAX_TRAIN_PER_NAME = 20_000
#: How the class priors are set: re-estimated on unannotated voxels, or as the clicks give them.
PRIORS = ("estimated", "clicks")
#: Inverse L2 strength of the logistic regression (docs/organelles.md: 0.1 and cross-validated values measured).
LOGISTIC_C = 1.0
#: The network's hidden ReLU units and L2 penalty (scikit-learn's ``alpha``; docs/organelles.md: 0.1 to 100
#: measured, 10 and more collapse with few clicks).
MLP_HIDDEN = 64
MLP_ALPHA = 1.0
#: Unannotated voxels (and blocks holding them, at most) the class priors are estimated on.
PRIOR_SAMPLE = 20_000
PRIOR_BLOCKS = 8


def estimate_refine_cost(segmentation: SegmentationJob, *, training: np.ndarray | None = None,
                         reuse_bytes: int = 0) -> dict | None:
    """The encoder forward passes and expected seconds of a refine, said as ``segment`` says its own
    (:func:`~orgaseg.pipeline.cost.estimate_cost`); None for features without an encoder.

    ``training``: the voxels whose features train the classifier first (none: a reused classifier labels
    at once); ``reuse_bytes``: the features of that pass kept for the labelling pass.
    """
    if segmentation.stages.encoder is None:
        return None
    first = None if training is None else [block for block, _ in blocks_holding(segmentation, training)]
    return estimate_cost(segmentation.stages, segmentation.job, plan_blocks(segmentation.job, segmentation.block_shape),
                         reuse_bytes=reuse_bytes, sampling=False, training=first)


def default_prior(kind: str) -> str:
    """The class frequencies a classifier predicts under by default (see :data:`PRIORS`).

    Logistic regression and the network, trained on the log loss, give
    probabilities that the frequencies can be estimated from; a forest's vote
    fractions are too coarse for that (on the phantom and on vnc the estimate
    drove a class to zero), so a forest keeps the clicks' frequencies.
    """
    return "clicks" if kind == "forest" else "estimated"


def sample_unannotated(segmentation: SegmentationJob, n: int = PRIOR_SAMPLE, *, max_blocks: int = PRIOR_BLOCKS,
                       seed: int = 0) -> np.ndarray:
    """``n`` voxel coordinates drawn uniformly from a seeded choice of at most ``max_blocks`` of the
    segmentation's blocks (:attr:`SegmentationJob.segmentation_blocks`).

    A few blocks bound the cost (their features are computed once more) while the
    class frequencies they hold stand for the volume's.
    """
    rng = np.random.default_rng(seed)
    blocks = plan_blocks(segmentation.job, segmentation.segmentation_blocks)
    chosen = [blocks[i] for i in rng.permutation(len(blocks))[:max_blocks]]
    sizes = np.array([b.size for b in chosen], dtype=np.float64)
    counts = rng.multinomial(n, sizes / sizes.sum())
    coords = [np.stack([rng.integers(r.start, r.stop, count) for r in block.region], axis=1)
              for block, count in zip(chosen, counts)]
    return np.concatenate(coords).astype(np.int64)


def estimate_priors(posteriors: np.ndarray, train_priors: np.ndarray, *, iterations: int = 200,
                    tolerance: float = 1e-6) -> np.ndarray:
    """Class frequencies of unannotated voxels, by expectation-maximisation (Saerens et al., 2002).

    Clicks are drawn per class, not in proportion to the classes, so a classifier trained on them
    takes rare classes (mitochondria) for as frequent as common ones. Each step reweights the
    posteriors by the current frequencies over the training ones and takes their mean as the new
    frequencies; no reference is involved.

    Parameters
    ----------
    posteriors : ndarray, shape (n, c)
        The classifier's class probabilities on unannotated voxels (under the training frequencies).
    train_priors : ndarray, shape (c,)
        The class frequencies of the training voxels.

    Returns
    -------
    ndarray, shape (c,)
    """
    priors = np.asarray(train_priors, np.float64).copy()
    for _ in range(iterations):
        weighted = posteriors * (priors / train_priors)
        weighted /= np.maximum(weighted.sum(axis=1, keepdims=True), 1e-300)
        updated = weighted.mean(axis=0)
        if np.max(np.abs(updated - priors)) < tolerance:
            return updated
        priors = updated
    return priors


def balanced_subsample(labels: np.ndarray, per_label: int = MAX_TRAIN_PER_NAME, seed: int = 0) -> np.ndarray:
    """Indices of at most ``per_label`` rows of each label, drawn with a seed (all rows of smaller labels)."""
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        keep.append(rows if rows.size <= per_label else rng.choice(rows, per_label, replace=False))
    return np.sort(np.concatenate(keep))


@dataclass
class RefinedClassifier:
    """Features plus cluster assignment -> named class: labels blocks like a clusterer.

    Attributes
    ----------
    clusterer : Clusterer
        The segmentation's clusterer (its assignment is part of the input).
    kind : {"logistic", "mlp", "forest"}
        The classifier.
    mean, scale : ndarray, shape (n_features,)
        Standardisation of the dense features.
    classes : ndarray of int
        The named-volume id each classifier output stands for.
    n_labels : int
        Ids in the named volume (``unassigned`` and every name).
    model : dict or sklearn estimator
        Logistic regression: ``{"coef": (c, d), "intercept": (c,)}``; the network:
        ``{"weights": [(d, h), (h, c)], "biases": [(h,), (c,)]}`` (one hidden ReLU
        layer); forest: the fitted estimator.
    train_priors : ndarray, shape (c,)
        Class frequencies of the voxels it was trained on.
    priors : ndarray, shape (c,)
        Class frequencies it predicts under (:func:`estimate_priors`, or ``train_priors``).
    context : tuple of int
        Superpixel sizes of the features' context
        (:class:`~orgaseg.features.context.SuperpixelContext`); the first
        ``clusterer.n_features`` channels are the segmentation's own features.
    z_context : bool
        Whether those features are followed by their mean on the adjacent z
        slices (:class:`~orgaseg.features.context.SliceNeighbours`).
    """

    clusterer: Clusterer
    kind: str
    mean: np.ndarray
    scale: np.ndarray
    classes: np.ndarray
    n_labels: int
    model: Any
    train_priors: np.ndarray | None = None
    priors: np.ndarray | None = None
    context: tuple[int, ...] = ()
    z_context: bool = False

    @property
    def k(self) -> int:
        return self.n_labels

    @property
    def n_features(self) -> int:
        """Feature channels it reads: the segmentation's, ``[mean || std]`` per context size, all of them twice with ``z_context``."""
        return context_channels(self.clusterer.n_features, self.context, self.z_context)

    @property
    def needs_raw(self) -> bool:
        return bool(self.clusterer.needs_raw)

    @property
    def working_grid(self) -> bool:
        """Whether the clusterer labels the working grid (the runner then hands it working voxels)."""
        return bool(getattr(self.clusterer, "working_grid", False))

    def design(self, features: np.ndarray, clusters: np.ndarray) -> np.ndarray:
        """The classifier's input: standardised features ``(n, F)`` and one-hot clusters ``(n, K)``."""
        standard = (np.asarray(features, np.float32) - self.mean) / self.scale
        one_hot = np.zeros((len(clusters), self.clusterer.k), dtype=np.float32)
        one_hot[np.arange(len(clusters)), np.asarray(clusters, np.int64)] = 1.0
        return np.concatenate([standard, one_hot], axis=1)

    def log_posteriors(self, design: np.ndarray) -> np.ndarray:
        """Log class probabilities ``(n, c)`` of design rows under the training frequencies (up to a constant per row)."""
        if self.kind == "forest":
            return np.log(np.maximum(self.model.predict_proba(design), 1e-12))
        if self.kind == "mlp":
            (hidden_weights, output_weights), (hidden_bias, output_bias) = self.model["weights"], self.model["biases"]
            scores = np.maximum(design @ hidden_weights + hidden_bias, 0.0) @ output_weights + output_bias
        else:
            scores = design @ self.model["coef"].T + self.model["intercept"]
        return _per_class(scores)

    def posteriors(self, design: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, c)`` under the training frequencies."""
        logs = self.log_posteriors(design)
        weights = np.exp(logs - logs.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def classify(self, design: np.ndarray) -> np.ndarray:
        """Named-volume ids of design rows: the most probable class under ``priors``."""
        return self._decide(self.log_posteriors(design))

    def _decide(self, logs: np.ndarray) -> np.ndarray:
        """Named-volume ids from log class probabilities under the training frequencies, ``(..., c)``."""
        if self.priors is not None and self.train_priors is not None:
            logs = logs + np.log(np.maximum(self.priors, 1e-12) / self.train_priors)
        return self.classes[np.argmax(logs, axis=-1)]

    @property
    def affine_scores(self) -> bool:
        """Whether :meth:`scores` applies: a logistic read-out of a clusterer whose scores are affine (k-means)."""
        return self.kind == "logistic" and bool(getattr(self.clusterer, "affine_scores", False))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Per voxel, the logistic scores of the features without the cluster's part, then the clusterer's scores.

        Both are affine in the features, so the runner interpolates these ``c + k`` values from a working
        grid instead of every feature channel (five to ten times as many with the superpixel context);
        :meth:`labels_from_scores` adds the cluster's part once the cluster is known. Logistic regression only.
        """
        coef, n = np.asarray(self.model["coef"], np.float32), self.mean.size
        weights = coef[:, :n] / self.scale  # standardisation folded into the weights
        offset = np.asarray(self.model["intercept"], np.float32) - weights @ self.mean
        flat = np.asarray(features, np.float32).reshape(-1, features.shape[-1])
        out = np.empty((len(flat), len(coef) + self.clusterer.k), dtype=np.float32)
        for start in range(0, len(flat), PREDICT_CHUNK):
            rows = flat[start:start + PREDICT_CHUNK]
            out[start:start + PREDICT_CHUNK, :len(coef)] = rows @ weights.T + offset
            out[start:start + PREDICT_CHUNK, len(coef):] = self.clusterer.scores(
                rows[:, :self.clusterer.n_features]).reshape(len(rows), -1)
        return out.reshape(features.shape[:-1] + (out.shape[1],))

    def labels_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """Named-volume ids from (interpolated) :meth:`scores`: the cluster's part added, then :meth:`classify`'s rule."""
        coef = np.asarray(self.model["coef"], np.float32)
        clusters = np.asarray(self.clusterer.labels_from_scores(scores[..., len(coef):]), np.int64)
        logs = _per_class(scores[..., :len(coef)] + coef[:, self.mean.size:].T[clusters])
        return self._decide(logs).astype(smallest_label_dtype(self.n_labels))

    def predict(self, features: np.ndarray, raw: np.ndarray | None = None, **block_info) -> np.ndarray:
        """Named-volume ids of a block: ``features (..., F)`` -> ``(...)`` (``block_info`` goes to the clusterer)."""
        own = features[..., :self.clusterer.n_features]
        clusters = np.asarray(self.clusterer.predict(own, raw, **block_info)).reshape(-1)
        flat = features.reshape(-1, features.shape[-1])
        out = np.empty(len(flat), dtype=smallest_label_dtype(self.n_labels))
        for start in range(0, len(flat), PREDICT_CHUNK):
            stop = start + PREDICT_CHUNK
            out[start:stop] = self.classify(self.design(flat[start:stop], clusters[start:stop]))
        return out.reshape(features.shape[:-1])

    def to_dict(self) -> dict:
        """JSON state (a forest's trees are not in it: :func:`save_classifier` writes them to a file)."""
        state = {"kind": self.kind, "mean": self.mean, "scale": self.scale, "classes": self.classes,
                 "n_labels": self.n_labels, "n_clusters": self.clusterer.k, "clusterer": self.clusterer.to_dict(),
                 "train_priors": self.train_priors, "priors": self.priors, "context": list(self.context),
                 "z_context": self.z_context}
        if self.kind == "logistic":
            state.update(coef=self.model["coef"], intercept=self.model["intercept"])
        elif self.kind == "mlp":
            state.update(weights=self.model["weights"], biases=self.model["biases"])
        return to_jsonable(state)


def _per_class(scores: np.ndarray) -> np.ndarray:
    """One score per class: with two classes scikit-learn gives one, the log odds of the second."""
    if scores.shape[-1] == 1:
        return np.concatenate([np.zeros_like(scores), scores], axis=-1)
    return scores


def train_classifier(
    features: np.ndarray,
    clusters: np.ndarray,
    targets: np.ndarray,
    *,
    clusterer: Clusterer,
    n_labels: int,
    kind: str = "logistic",
    unannotated: tuple[np.ndarray, np.ndarray] | None = None,
    context=(),
    z_context: bool = False,
    seed: int = 0,
) -> RefinedClassifier:
    """Fit the refining classifier on annotated voxels.

    Parameters
    ----------
    features : ndarray, shape (n, F)
        Dense features of the annotated voxels (with their superpixel context, if any).
    clusters : ndarray, shape (n,)
        Their cluster ids in the segmentation.
    targets : ndarray, shape (n,)
        Their named-volume ids.
    clusterer : Clusterer
        The segmentation's clusterer.
    n_labels : int
        Ids in the named volume.
    kind : {"logistic", "mlp", "forest"}
        Logistic regression (L2, lbfgs), a network with one hidden layer of
        :data:`MLP_HIDDEN` ReLU units (L2 :data:`MLP_ALPHA`, lbfgs), or a random
        forest of 100 trees.
    unannotated : (features, clusters), optional
        Features ``(m, F)`` and cluster ids ``(m,)`` of unannotated voxels: the class
        frequencies are estimated on them (:func:`estimate_priors`). Without them the
        classifier predicts under the frequencies of the annotations.
    context : str or sequence of int
        The superpixel sizes of the features' context
        (see :func:`~orgaseg.organelles.segmentation_features.rebuild_segmentation`).
    z_context : bool
        Whether the features carry their mean on the adjacent slices
        (see :func:`~orgaseg.organelles.segmentation_features.rebuild_segmentation`).
    seed : int
        Seed of the network's initial weights and of the forest.

    Returns
    -------
    RefinedClassifier
    """
    if kind not in CLASSIFIERS:
        raise OrgasegError(f"unknown classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")
    classes = np.unique(targets)
    if classes.size < 2:
        raise OrgasegError("refining needs annotations of at least two names: a classifier cannot learn one class")
    context = parse_context(context)
    expected = context_channels(clusterer.n_features, context, z_context)
    if features.shape[1] != expected:
        raise OrgasegError(f"the annotated voxels have {features.shape[1]} features, but the clusterer's "
                           f"{clusterer.n_features} with a context of {len(context)} superpixel sizes"
                           f"{' and the adjacent slices' if z_context else ''} make {expected}")
    mean, scale = _standardisation(clusterer, features if unannotated is None else unannotated[0])
    shell = RefinedClassifier(clusterer, kind, mean, scale, classes.astype(np.int64), int(n_labels), None,
                              context=context, z_context=bool(z_context))
    design = shell.design(features, clusters)
    index = np.searchsorted(classes, targets)
    if kind == "forest":
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed).fit(design, index)
    elif kind == "mlp":
        with warnings.catch_warnings(), one_thread():
            warnings.simplefilter("ignore")
            network = make_network(seed).fit(design, index)
        model = {"weights": [w.astype(np.float32) for w in network.coefs_],
                 "biases": [b.astype(np.float32) for b in network.intercepts_]}
    else:
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings(), one_thread():  # one thread: the same classifier on every machine
            warnings.simplefilter("ignore")  # a convergence note on a few clicks says nothing to the user
            fitted = LogisticRegression(C=LOGISTIC_C, max_iter=2000).fit(design, index)
        model = {"coef": fitted.coef_.astype(np.float32), "intercept": fitted.intercept_.astype(np.float32)}
    train_priors = np.bincount(index, minlength=classes.size) / index.size
    fitted = dataclasses.replace(shell, model=model, train_priors=train_priors, priors=train_priors)
    if unannotated is not None:
        posteriors = fitted.posteriors(fitted.design(*unannotated))
        fitted = dataclasses.replace(fitted, priors=estimate_priors(posteriors, train_priors))
    return fitted


def make_network(seed: int = 0):
    """The unfitted network of ``--classifier mlp``: scikit-learn's ``MLPClassifier`` with :data:`MLP_HIDDEN` ReLU
    units, L2 :data:`MLP_ALPHA`, lbfgs, initial weights drawn with ``seed``."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier((MLP_HIDDEN,), alpha=MLP_ALPHA, solver="lbfgs", max_iter=2000, random_state=seed)


def context_channels(own: int, context: tuple[int, ...], z_context: bool) -> int:
    """Channels of ``own`` features with a superpixel context of ``len(context)`` sizes and, optionally, the adjacent slices."""
    return own * (1 + 2 * len(context)) * (2 if z_context else 1)


def _standardisation(clusterer: Clusterer, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of every feature channel.

    The segmentation's own channels take the clusterer's statistics when it has
    them (a large sample); the rest (superpixel context), and every channel of a
    clusterer without them, take those of ``features`` (the unannotated sample
    when there is one, else the annotated voxels).
    """
    mean, scale = features.mean(axis=0), features.std(axis=0)
    own = clusterer.n_features
    kept_mean, kept_scale = getattr(clusterer, "mean", None), getattr(clusterer, "scale", None)
    if kept_mean is not None and kept_scale is not None and np.shape(kept_mean) == np.shape(kept_scale) == (own,):
        mean[:own], scale[:own] = kept_mean, kept_scale
    scale = np.where(np.asarray(scale) > 0, scale, 1.0)
    return np.asarray(mean, np.float32), np.asarray(scale, np.float32)


def forest_path(output: str | Path) -> Path:
    """Where a forest is stored beside the named output ``output``."""
    output = Path(output)
    return output.with_name(output.name + ".forest.joblib")


def save_classifier(classifier: RefinedClassifier, output: str | Path, *, overwrite: bool = False) -> dict:
    """The classifier's provenance entry; a forest is written beside ``output`` (atomically) and named in it."""
    state = classifier.to_dict()
    if classifier.kind == "forest":
        import joblib

        from orgaseg.models.checkpoint import file_hash

        path = forest_path(output)
        if path.exists() and not overwrite:
            raise OrgasegError(f"{path} exists; pass {arg('overwrite')} to replace it")
        with atomic_path(path) as temporary:
            joblib.dump(classifier.model, temporary)
        state.update(path=path.name, sha256=file_hash(path))
    return state


def load_classifier(state: dict, *, folder: str | Path) -> RefinedClassifier:
    """The classifier of a provenance entry (:func:`save_classifier`); a forest's file is looked up in ``folder``."""
    try:
        kind = state["kind"]
        clusterer = clusterer_from_dict(state["clusterer"])
        common = dict(clusterer=clusterer, kind=kind, mean=np.asarray(state["mean"], np.float32),
                      scale=np.asarray(state["scale"], np.float32), classes=np.asarray(state["classes"], np.int64),
                      n_labels=int(state["n_labels"]), train_priors=_optional_array(state.get("train_priors")),
                      priors=_optional_array(state.get("priors")), context=parse_context(state.get("context")),
                      z_context=bool(state.get("z_context", False)))
        if kind == "logistic":
            model = {"coef": np.asarray(state["coef"], np.float32), "intercept": np.asarray(state["intercept"], np.float32)}
            return RefinedClassifier(**common, model=model)
        if kind == "mlp":
            model = {"weights": [np.asarray(w, np.float32) for w in state["weights"]],
                     "biases": [np.asarray(b, np.float32) for b in state["biases"]]}
            if len(model["weights"]) != 2 or len(model["biases"]) != 2:
                raise ValueError("the network needs two weight matrices and two bias vectors")
            return RefinedClassifier(**common, model=model)
        if kind != "forest":
            raise OrgasegError(f"unknown classifier {kind!r} in the provenance")
        path = Path(folder) / state["path"]
        expected = state["sha256"]
    except (KeyError, TypeError, ValueError) as err:
        raise OrgasegError(f"the provenance's classifier entry is incomplete ({err})") from None
    import joblib

    from orgaseg.models.checkpoint import file_hash

    if not path.is_file():
        raise OrgasegError(f"{path}: the forest the provenance names is not there (it is kept beside the named output)")
    if file_hash(path) != expected:
        raise OrgasegError(f"{path}: not the forest the provenance names (its SHA-256 differs)")
    return RefinedClassifier(**common, model=joblib.load(path))


def _optional_array(value) -> np.ndarray | None:
    return None if value is None else np.asarray(value, np.float64)


def label_with_classifier(segmentation: SegmentationJob, classifier: RefinedClassifier, sink, *, executor=None,
                          progress=None) -> None:
    """Relabel every voxel of the segmentation's volume with ``classifier``, block by block, into ``sink``."""
    from orgaseg.pipeline.runner import label_volume

    label_volume(segmentation.job, [classifier], [sink], block_shape=segmentation.block_shape, executor=executor,
                 progress=progress)


__all__ = [
    "CLASSIFIERS", "DEFAULT_CONTEXT_PX", "LOGISTIC_C", "MLP_ALPHA", "MLP_HIDDEN", "PRIORS", "RefinedClassifier",
    "balanced_subsample", "default_prior", "estimate_priors", "estimate_refine_cost", "forest_path",
    "label_with_classifier", "load_classifier", "make_network", "sample_unannotated", "save_classifier",
    "train_classifier",
]
