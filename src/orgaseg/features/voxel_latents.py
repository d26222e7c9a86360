"""Per-voxel latents of a patch encoder (Han et al.): one patch per voxel, or per grid point and interpolated.

Han et al. represent a voxel by the latent mean of the patch centred on it.
Their patch at inference holds 16 samples per axis spanning ``2 r`` working
pixels (``r = 4``: a 9-voxel window resampled to 16 samples). This module
computes those patches for a whole block without a Python loop per voxel.

Geometry (one axis ``a`` of voxel size ``v_a`` nm)
---------------------------------------------------
The patch half-extent is ``R = r u`` nm, ``u`` the in-plane working pixel
size, so patches are cubes in nanometres on anisotropic stacks too. Along
axis ``a`` the samples sit at ``h_a = R / v_a`` voxels times
``linspace(-1, 1, n)`` from the centre voxel; linear interpolation makes
each sample a weighted sum of the window of ``2 w_a + 1`` voxels,
``w_a = ceil(h_a)``, centred on the voxel. With the weights as an
``(n, 2 w_a + 1)`` matrix ``A_a`` per axis, the patch of every window is
``A_z (x) A_y (x) A_x`` applied to it: windows are strided views of the padded
block (:func:`numpy.lib.stride_tricks.sliding_window_view`), gathered a batch
at a time and contracted with the three matrices in one ``einsum``. This is
exactly trilinear sampling of the block (``grid_sample`` with aligned
corners), at the cost of the window's voxels per sample.

Each patch is standardised (zero mean, unit variance, as in training) and
encoded; the encoder's mean head gives the latent (no sampling, no decoder).

Stride
------
With stride ``s`` latents are computed only at voxels whose absolute index
along y and x is a multiple of ``s`` (along z: of ``s_z = max(1, round(s u /
v_z))``, the same physical step; the 2D variant encodes each section on its
own) and interpolated linearly to every voxel in between: ``s^2 s_z`` times
fewer forward passes. The grid is anchored at absolute 0 (``origin``), so a
voxel's latent does not depend on how the volume is cut into blocks; at
``s = 1`` every voxel gets its own patch. The default stride is
:data:`DEFAULT_STRIDE`. Borders are padded by reflection.

Halo per axis: ``w_a + s_a - 1`` voxels (the window of the farthest grid
point a voxel interpolates from).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from orgaseg.errors import OrgasegError
from orgaseg.features.base import (
    AxisCount,
    EncodesFieldsOfView,
    Region,
    reflected_span,
    resolve_keep,
)
from orgaseg.features.cover_stride import check_block
from orgaseg.models.device import resolve_device
from orgaseg.models.vae3d import standardize_patches
from orgaseg.progress import ProgressCallback, report

#: Default stride (working pixels in-plane): 4x fewer forward passes than one patch per voxel.
DEFAULT_STRIDE = 2

#: Which latent dimensions are the features.
SUBSPACES = ("semantic", "all")


def interpolation_matrix(half_extent: float, samples: int) -> np.ndarray:
    """``(samples, 2 w + 1)`` linear-interpolation weights of samples at ``half_extent * linspace(-1, 1, samples)``.

    Column ``j`` is the voxel at offset ``j - w`` from the centre, ``w = ceil(half_extent)``.
    """
    reach = int(math.ceil(half_extent - 1e-9))
    positions = half_extent * np.linspace(-1.0, 1.0, samples)
    offsets = np.arange(-reach, reach + 1)
    return np.clip(1.0 - np.abs(positions[:, None] - offsets[None, :]), 0.0, None).astype(np.float32)


def grid_points(length: int, origin: int, stride: int) -> tuple[int, int]:
    """The first (absolute) and the number of the stride-``stride`` grid points voxels ``origin .. origin + length - 1``
    interpolate from."""
    first = (origin // stride) * stride
    last = -(-(origin + length - 1) // stride) * stride
    return first, (last - first) // stride + 1


def grid_interpolation(length: int, origin: int, stride: int) -> tuple[np.ndarray, int]:
    """Linear interpolation from a stride-``stride`` grid to the voxels ``origin .. origin + length - 1``.

    Returns the ``(length, G)`` weight matrix from the ``G`` grid points
    ``first, first + stride, ...`` to the voxels, and ``first`` (absolute).
    """
    first, count = grid_points(length, origin, stride)
    position = (origin + np.arange(length) - first) / stride
    lower = np.minimum(np.floor(position).astype(int), count - 1)
    frac = position - lower
    weights = np.zeros((length, count), dtype=np.float32)
    rows = np.arange(length)
    weights[rows, lower] = 1.0 - frac
    upper = np.minimum(lower + 1, count - 1)
    weights[rows, upper] += frac
    return weights, first


class VoxelLatents(EncodesFieldsOfView):
    """Dense per-voxel latents of a 2D or 3D patch encoder (Han et al.'s inference).

    Parameters
    ----------
    encoder : callable
        ``encoder(patches)`` maps ``(B, 1, n, n, n)`` (3D) or ``(B, 1, n, n)``
        (2D) standardised patches on ``device`` to latent means ``(B, latent)``.
    latent : int
        Latent width of the encoder.
    voxel_size : tuple of float
        Working voxel size ``(z, y, x)`` in nm.
    ndim : int
        3 (cubes) or 2 (squares in each section).
    patch : int
        Samples per axis ``n``.
    radius : float
        Patch half-extent in working in-plane pixels (training drew it from 2-6; default 4).
    stride : int
        Grid step in-plane (see the module docstring); 1: one patch per voxel.
    subspace : {"semantic", "all"}
        Features: the first ``semantic`` latent dimensions (the metric-learned subspace) or all of them.
    semantic : int
        Size of the semantic subspace.
    batch_size : int
        Patches per forward pass.
    device : str
        Torch device.
    progress : callable, optional
        ``progress(description, done, total)`` after every batch.
    """

    #: Computes a part of a block with the rest as context (``keep``; see FeatureExtractor).
    keeps_region = True

    def __init__(self, encoder, *, latent: int, voxel_size, ndim: int = 3, patch: int = 16, radius: float = 4.0,
                 stride: int = DEFAULT_STRIDE, subspace: str = "semantic", semantic: int = 8,
                 batch_size: int = 1024, device: str = "cpu", progress: ProgressCallback | None = None) -> None:
        if ndim not in (2, 3):
            raise OrgasegError(f"voxel latents are 2D or 3D, got ndim {ndim}")
        if subspace not in SUBSPACES:
            raise OrgasegError(f"subspace must be one of {SUBSPACES}, got {subspace!r}")
        if int(stride) < 1:
            raise OrgasegError(f"the stride must be a positive number of pixels, got {stride}")
        if not radius > 0:
            raise OrgasegError(f"the patch radius must be positive, got {radius}")
        if int(batch_size) < 1:
            raise OrgasegError(f"batch size must be positive, got {batch_size}")
        voxel_size = tuple(float(v) for v in voxel_size)
        if len(voxel_size) != 3 or min(voxel_size) <= 0:
            raise OrgasegError(f"voxel size must be three positive nm values (z, y, x), got {voxel_size}")
        self.encoder = encoder
        self.latent, self.ndim, self.patch = int(latent), int(ndim), int(patch)
        self.radius, self.stride, self.subspace = float(radius), int(stride), subspace
        self.n_features = int(semantic) if subspace == "semantic" else self.latent
        self.voxel_size = voxel_size
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.progress = progress
        unit = min(voxel_size[1:])
        half = [self.radius * unit / v for v in voxel_size]
        self._matrices = [interpolation_matrix(h, self.patch) for h in half[3 - self.ndim:]]
        self._reach = [0] * (3 - self.ndim) + [(m.shape[1] - 1) // 2 for m in self._matrices]
        z_stride = max(1, round(self.stride * unit / voxel_size[0])) if self.ndim == 3 else 1
        self._strides = (z_stride, self.stride, self.stride)
        self._torch_matrices = [torch.from_numpy(m).to(self.device) for m in self._matrices]

    @property
    def halo(self) -> tuple[int, int, int]:
        """Context voxels each side ``(z, y, x)``: the window of the farthest grid point a voxel uses."""
        return tuple(w + s - 1 for w, s in zip(self._reach, self._strides))

    @property
    def strides(self) -> tuple[int, int, int]:
        """Grid steps ``(z, y, x)`` in working voxels."""
        return self._strides

    @property
    def forwards_per_voxel(self) -> float:
        """Encoder forward passes per voxel away from borders: ``1 / (s_z s^2)``."""
        return 1.0 / float(np.prod(self._strides))

    @property
    def window(self) -> tuple[int, ...]:
        """Voxels each patch reads per axis (``2 w + 1``; 3 axes in 3D, y and x in 2D)."""
        return tuple(m.shape[1] for m in self._matrices)

    @property
    def field_of_view_shape(self) -> tuple[int, ...]:
        """The shape of one encoder input: ``(1, n, n, n)`` in 3D, ``(1, n, n)`` in 2D."""
        return (1,) + (self.patch,) * self.ndim

    def fields_of_view_axes(self) -> list[tuple[AxisCount, AxisCount, AxisCount]]:
        """Per-axis counts of the grid points (one patch each) whose product is :meth:`n_fields_of_view`."""
        return [tuple((lambda length, origin, s=s: grid_points(length, origin, s)[1]) for s in self._strides)]

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        """Refuse a volume (``shape`` z y x in working voxels) whose planes the stride leaves one grid point across.

        Where the stride is at least a plane's height or width, the grid's next point lies beyond the edge: every
        voxel's latent would be interpolated between one patch and its mirror image, and k-means would cut that
        smooth blend into bands whatever the image shows.
        """
        narrow = {axis: n for axis, n in zip("yx", shape[1:]) if self.stride >= n}
        if narrow:
            raise OrgasegError(
                f"the stride, {self.stride} working pixels, is not smaller than the planes' {shape[1]} x {shape[2]} "
                f"working pixels (y x): along {' and '.join(narrow)} a plane holds one grid point, and every voxel's "
                "latent would be interpolated between it and its mirror image beyond the edge, giving clusters that "
                f"are bands of that blend, not structures; use a stride below {min(narrow.values())} (default "
                f"{DEFAULT_STRIDE}), a finer pixel size, or larger planes")

    def config(self) -> dict:
        return {"kind": "voxel_latents", "ndim": self.ndim, "patch": self.patch, "radius": self.radius,
                "stride": self.stride, "strides": list(self._strides), "subspace": self.subspace,
                "n_features": self.n_features, "window": list(self.window)}

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: Region | None = None) -> np.ndarray:
        """Per-voxel latents of a normalised block ``(z, y, x)`` at absolute ``origin``: ``(z, y, x, F)`` float32.

        ``keep`` (three slices, default the whole block) is the part whose
        latents are returned: only the grid points it interpolates from are
        encoded, their patches read from the rest of the block (the context).
        """
        block = check_block(block, origin, "voxel-latents")
        keep = resolve_keep(keep, block.shape)
        part = tuple(int(o) + k.start for o, k in zip(origin, keep))
        plans = [grid_interpolation(k.stop - k.start, p, s) for k, p, s in zip(keep, part, self._strides)]
        counts = [w.shape[1] for w, _ in plans]
        spans = [(first - w, first + (weights.shape[1] - 1) * s + w + 1)
                 for (weights, first), s, w in zip(plans, self._strides, self._reach)]
        padded = reflected_span(block, origin, spans)
        shape = (1,) * (3 - self.ndim) + self.window
        windows = np.lib.stride_tricks.sliding_window_view(padded, shape)
        windows = windows[:: self._strides[0], :: self._strides[1], :: self._strides[2]][: counts[0], : counts[1], : counts[2]]
        grid_latents = self._encode_windows(windows, counts)
        return self._to_voxels(grid_latents, [w for w, _ in plans])

    def _encode_windows(self, windows: np.ndarray, counts: list[int]) -> torch.Tensor:
        """Latents ``(Gz, Gy, Gx, F)`` of the windows of a strided view ``(Gz, Gy, Gx, wz, wy, wx)``."""
        total = int(np.prod(counts))
        out = torch.empty(total, self.n_features, device=self.device)
        n_batches = -(-total // self.batch_size)
        with torch.inference_mode():
            for batch in range(n_batches):
                chunk = slice(batch * self.batch_size, min(total, (batch + 1) * self.batch_size))
                # gather one batch of windows from the view (reshaping the whole view would copy every window)
                index = np.unravel_index(np.arange(chunk.start, chunk.stop), counts)
                gathered = windows[index].reshape(-1, *self.window)
                values = torch.from_numpy(gathered).to(self.device)
                patches = self._patches(values)
                latents = self.encoder(standardize_patches(patches).unsqueeze(1))
                if latents.shape != (len(values), self.latent):
                    raise OrgasegError(f"the encoder returned latents of shape {tuple(latents.shape)}, expected "
                                       f"({len(values)}, {self.latent})")
                out[chunk] = latents[:, : self.n_features].float()
                report(self.progress, "voxel latents", batch + 1, n_batches)
        return out.view(*counts, self.n_features)

    def _patches(self, windows: torch.Tensor) -> torch.Tensor:
        """Resample windows to patches: one contraction per axis (exact trilinear sampling)."""
        if self.ndim == 3:
            az, ay, ax = self._torch_matrices
            return torch.einsum("ai,bj,ck,nijk->nabc", az, ay, ax, windows)
        ay, ax = self._torch_matrices
        return torch.einsum("bj,ck,njk->nbc", ay, ax, windows)

    def _to_voxels(self, latents: torch.Tensor, weights: list[np.ndarray]) -> np.ndarray:
        """Linear interpolation of grid latents to the block's voxels, one axis at a time."""
        wz, wy, wx = (torch.from_numpy(w).to(self.device) for w in weights)
        if all(w.shape[0] == w.shape[1] and torch.equal(w, torch.eye(len(w), device=self.device))
               for w in (wz, wy, wx)):
            return latents.cpu().numpy()
        values = torch.einsum("zg,ghwf->zhwf", wz, latents)
        values = torch.einsum("yh,zhwf->zywf", wy, values)
        values = torch.einsum("xw,zywf->zyxf", wx, values)
        return values.cpu().numpy()
