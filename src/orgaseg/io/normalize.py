"""Robust intensity normalisation from a random sample of a volume.

The low and high percentiles of a seeded sample of voxels map to 0 and 1.
The statistics are small (:class:`Normalization`) and are stored in model
checkpoints, so a second volume is normalised exactly like the training data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.io.volume import Volume, as_volume
from orgaseg.options import check_whole_number

# Volumes up to this many times ``sample_size`` voxels are read whole.
_READ_WHOLE_FACTOR = 4
# Larger volumes are sampled as random single-slice patches: about this many
# (more when the slices are small, up to the maximum).
_N_PATCHES = 64
_MAX_PATCHES = 1024


@dataclass(frozen=True)
class Normalization:
    """Maps intensities ``low .. high`` to ``0 .. 1`` (clipped), optionally inverted.

    When ``low == high`` (a constant sample) there is no scale to divide by:
    values below ``low`` map to 0, above to 1, and equal to 0.5 (a step).
    NaN (no data, e.g. outside an aligned stack) maps to 0, like the darkest voxels.
    """

    low: float
    high: float
    invert: bool = False

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Normalise a block of any numeric dtype to float32 in ``[0, 1]``.

        Data that float32 does not hold exactly (32- and 64-bit integers, float64) is shifted and scaled in
        float64 before the result is rounded to float32: cast first, grey levels 0..255 above an offset of
        4e9 (uint32) fell on 512-wide float32 steps, and above 2^40 (int64) on one value.
        """
        block = np.asarray(block)
        floating = block.dtype.kind == "f"  # only float data can hold NaN
        values = np.asarray(block, dtype=np.float32 if np.can_cast(block.dtype, np.float32) else np.float64)
        unit = values.dtype.type
        if self.high > self.low:
            out = ((values - unit(self.low)) / unit(self.high - self.low)).astype(np.float32, copy=False)
            np.clip(out, 0.0, 1.0, out=out)
        else:
            out = np.where(values > self.low, 1.0, np.where(values < self.low, 0.0, 0.5)).astype(np.float32)
        if floating:
            out[np.isnan(out)] = 0.0  # after the clip, which keeps NaN
        if self.invert:
            out = np.float32(1.0) - out
        return out

    def to_dict(self) -> dict:
        """Plain JSON-able form (for checkpoints and provenance)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        """Inverse of :meth:`to_dict`."""
        try:
            low, high = float(data["low"]), float(data["high"])
        except (KeyError, TypeError, ValueError) as exc:
            raise OrgasegError(
                f"invalid normalisation record {data!r}: needs numbers 'low' and 'high'"
            ) from exc
        return cls(low=low, high=high, invert=bool(data.get("invert", False)))


def compute_normalization(
    volume,
    *,
    percentiles: Sequence[float] = (0.5, 99.5),
    sample_size: int = 1_000_000,
    seed: int = 0,
    invert: bool = False,
    mask=None,
    refuse_constant: bool = False,
) -> Normalization:
    """Robust intensity range of a volume from a seeded random sample.

    Parameters
    ----------
    volume : Volume or array-like
        The intensities (2D or 3D arrays are wrapped).
    percentiles : (float, float)
        Low and high percentiles (0-100) that map to 0 and 1.
    sample_size : int
        Number of voxels the percentiles are computed on. A volume up to
        four times this size is read whole; a larger one is sampled as
        random single-slice patches (64 of them for large slices), so only
        a small part of it is read.
    seed : int
        Seed of the sampling.
    invert : bool
        Map bright to 0 and dark to 1 (e.g. for inverted-contrast EM).
    mask : Volume or array-like, optional
        Boolean volume of the same shape; only voxels where it is true count.
    refuse_constant : bool
        Refuse a volume whose sampled intensities are all one value, in which there is nothing to segment or
        learn (``segment`` and ``train`` do, whatever the method: features that vary over a constant volume,
        such as an encoder's position embeddings, would give clusters of nothing). A volume that is only
        nearly constant (its percentiles equal) is warned about either way.

    Returns
    -------
    Normalization

    Raises
    ------
    OrgasegError
        With ``refuse_constant``, on a constant volume, naming its value.
    """
    volume = as_volume(volume)
    low_pct, high_pct = (float(p) for p in percentiles)
    if not 0 <= low_pct <= high_pct <= 100:
        raise OrgasegError(f"percentiles must satisfy 0 <= low <= high <= 100, got {tuple(percentiles)}")
    sample = sample_intensities(volume, sample_size=sample_size, seed=seed, mask=mask)
    low, high = finite_percentiles(sample, [low_pct, high_pct], volume.path)
    if refuse_constant and np.nanmin(sample) == np.nanmax(sample):  # NaN left out, as by the percentiles
        raise OrgasegError(f"{volume.path or 'the volume'}: every sampled intensity ({sample.size:,} voxels) is "
                           f"{float(np.nanmin(sample)):g}: the volume is constant, with nothing to segment or learn "
                           "(an empty region, channel or level?)")
    if low == high and low_pct < high_pct:
        warnings.warn(OrgasegWarning(
            f"{volume.path or 'the volume'}: the sampled intensities from the {low_pct:g}th to the {high_pct:g}th "
            f"percentile are all {low:g}: the volume is (nearly) constant, so there is almost no contrast to "
            "learn or cluster"), stacklevel=2)
    return Normalization(low=float(low), high=float(high), invert=bool(invert))


def finite_percentiles(sample: np.ndarray, percentiles: Sequence[float], name=None) -> np.ndarray:
    """Percentiles of the finite values of an intensity sample; warns about NaN and infinities, refuses none finite."""
    sample = np.asarray(sample, dtype=np.float64)
    finite = np.isfinite(sample)
    if not finite.all():
        where = name or "the volume"
        if not finite.any():
            raise OrgasegError(f"{where}: every sampled intensity is NaN or infinite")
        warnings.warn(OrgasegWarning(
            f"{where}: {np.count_nonzero(~finite):,} of {sample.size:,} sampled intensities are NaN or infinite; "
            "the intensity range is that of the finite ones, NaN is read as the darkest value"), stacklevel=3)
        sample = sample[finite]
    return np.percentile(sample, percentiles)


def sample_intensities(volume, *, sample_size: int = 1_000_000, seed: int = 0, mask=None) -> np.ndarray:
    """A seeded random sample of at most ``sample_size`` voxel values (1D), read as
    :func:`compute_normalization` reads them (whole for small volumes, thin patches otherwise)."""
    volume = as_volume(volume)
    seed = check_whole_number(seed, "seed")  # numpy's own refusal named neither the argument nor the function
    if not isinstance(sample_size, (int, np.integer)) or isinstance(sample_size, bool) or sample_size < 1:
        raise OrgasegError(f"sample_size must be positive, got {sample_size!r}")
    if mask is not None:
        mask = as_volume(mask)
        if mask.shape != volume.shape:
            raise OrgasegError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
    rng = np.random.default_rng(seed)
    sample = np.concatenate([values for values in _sample_blocks(volume, mask, sample_size, rng)])
    if sample.size == 0:
        raise OrgasegError(f"{volume.path}: the mask selects no voxels in the sampled region")
    if sample.size > sample_size:
        sample = rng.choice(sample, size=sample_size, replace=False)
    return sample


def normalize_volume(volume: Volume, normalization: Normalization) -> Volume:
    """A lazy float32 view of ``volume`` whose blocks pass through ``normalization``.

    Parameters
    ----------
    volume : Volume or array-like
        The intensities (2D or 3D arrays are wrapped, as :func:`compute_normalization` wraps them).
    normalization : Normalization
        E.g. :func:`compute_normalization`'s.

    Returns
    -------
    Volume
        float32, values in [0, 1].
    """
    return as_volume(volume).with_transform(normalization.apply, dtype=np.float32)


def _sample_blocks(volume: Volume, mask: Volume | None, sample_size: int, rng: np.random.Generator):
    """Yield 1D arrays of voxel values from the regions read for the sample."""
    if volume.size <= _READ_WHOLE_FACTOR * sample_size:
        regions = [(slice(None),) * 3]
    else:
        # thin patches touch one slice each, which is cheap for every format
        nz, ny, nx = volume.shape
        side = int(np.ceil(np.sqrt(sample_size / _N_PATCHES)))
        py, px = min(side, ny), min(side, nx)
        n_patches = min(int(np.ceil(sample_size / (py * px))), _MAX_PATCHES)
        regions = []
        for _ in range(n_patches):
            z, y, x = rng.integers(0, nz), rng.integers(0, ny - py + 1), rng.integers(0, nx - px + 1)
            regions.append((slice(z, z + 1), slice(y, y + py), slice(x, x + px)))
    for region in regions:
        values = volume.read(region)
        if mask is not None:
            values = values[mask.read(region).astype(bool)]
        yield values.ravel()
