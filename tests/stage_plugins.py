"""A clusterer defined outside the package, to show that a new clusterer needs no change in ``src/``.

``intensity-bins`` is fitted on whole blocks (``sample = "blocks"``) and labels
a voxel by reading the block's normalised intensities (``needs_raw``): K
intensity bins at the quantiles of the sampled blocks. Not a useful method,
but it exercises both paths the graph clusterers will take.
"""

from __future__ import annotations

import numpy as np

from orgaseg.cluster import ClustererSpec


class IntensityBins:
    needs_raw = True

    def __init__(self, thresholds, n_features: int) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.n_features = int(n_features)
        self.k = len(self.thresholds) + 1

    def predict(self, features, raw=None):
        assert raw is not None and raw.shape == features.shape[:-1]
        return np.digitize(raw, self.thresholds).astype(np.uint8)

    def to_dict(self) -> dict:
        return {"kind": "intensity-bins", "thresholds": self.thresholds.tolist(), "n_features": self.n_features}

    @classmethod
    def from_dict(cls, state: dict) -> "IntensityBins":
        return cls(state["thresholds"], state["n_features"])


class IntensityBinsFit:
    def __init__(self, k: int, *, seed: int = 0, stride: int = 1) -> None:
        self.k, self.stride = k, int(stride)
        self.values: list[np.ndarray] = []
        self.n_features = None
        self.blocks = 0

    def add(self, features, raw=None) -> None:
        assert features.ndim == 4 and raw.shape == features.shape[:-1]  # whole blocks
        self.n_features = features.shape[-1]
        self.values.append(raw.ravel()[:: self.stride])
        self.blocks += 1

    def finish(self, progress=None) -> IntensityBins:
        values = np.concatenate(self.values)
        return IntensityBins(np.quantile(values, np.arange(1, self.k) / self.k), self.n_features)


INTENSITY_BINS = ClustererSpec(
    name="intensity-bins",
    summary="K intensity bins at the quantiles of sampled blocks (a test plug-in)",
    start_fit=IntensityBinsFit,
    from_dict=IntensityBins.from_dict,
    options={"stride": "keep every n-th voxel of a block"},
    sample="blocks",
    default_sample_size=10_000,
)
