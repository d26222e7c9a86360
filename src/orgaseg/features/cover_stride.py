"""Cover-and-stride dense features: one encoder token per pixel, centred on it.

MAESTER (Xie et al., CVPR 2023) encodes a 2D field of view of ``F x F``
pixels into a grid of ``G x G`` tokens, ``G = F / P``; token ``(i, j)`` covers
pixels ``[P i, P i + P) x [P j, P j + P)`` of the field of view. Tokens near
the edge of a field of view see little context, so only the ``m x m`` central
tokens (``keep``) are used, and fields of view are placed so that every pixel
of the image gets exactly one kept token whose patch is centred on it. The
encoder is 2D: every z slice is processed on its own (z halo 0).

Geometry (one axis; the other is the same)
------------------------------------------
Notation: ``a = (G - m) / 2`` is the first kept token (so ``G - m`` must be
even), ``S = m P`` the tiling period, ``c = P a + P // 2`` the distance from
a field of view's first pixel to the centre of its first kept token
(``P // 2`` is the centre of a patch; for even ``P`` the lower of the two
middle pixels). Paper values: F 80, P 5, G 16, m 4 -> a 6 (tokens 6..9),
S 20, c 32.

For each offset ``d`` in ``0..P-1`` and each integer ``t``, a field of view
starts at absolute coordinate ``u = t S + d - c``. Its kept token ``a + k``
(``k = 0..m-1``) is centred at ``u + P (a + k) + P // 2 = t S + k P + d``.
Every integer ``y`` has exactly one decomposition ``y = t S + k P + d``
(``d = y mod P``, ``k = floor(y / P) mod m``, ``t = floor(y / S)``), so every
pixel receives exactly one token and that token is centred on it.

The tiling is anchored at absolute coordinate 0, not at the block's corner: a
pixel's position inside its field of view (which kept token it is) depends
on ``y mod S``, so a block must be told where it lies (``origin``) for its
features to equal those of the whole slice.

For a block of length ``L`` starting at absolute ``o``: ``t`` runs from
``t0 = floor(o / S)`` to ``floor((o + L - 1) / S)`` (``T`` values) and
``q = o - t0 S``. The block is padded by reflection with ``c + q`` pixels
before and ``(T - 1) S + P - 1 + F - c - q - L >= 0`` after. In padded
coordinates field of view ``(j, d)`` starts at ``j S + d`` and its kept token
``k`` lands at ``j S + k P + d`` of an output buffer of ``T S`` pixels (block
pixel = buffer pixel - ``q``): the buffer reshaped to ``(T, m, P)`` is
indexed ``[j, k, d]``, which makes the scatter one vectorised assignment.

Context (halo): a pixel's field of view reaches ``c + (m - 1) P`` pixels
before it and ``F - 1 - c`` after it (47 and 47 for the paper values).

Cost: ``P^2`` fields of view per ``S x S`` pixels, i.e. ``1 / m^2`` forward
passes per pixel (1/16 for m 4); ``P^2 T_y T_x`` per slice exactly.

Stride-only ablation (paper Table 4f, ``mode="stride"``)
-------------------------------------------------------
Non-overlapping fields of view at stride ``F`` (``a = 0, m = G, S = F,
c = 0``, one offset): field of view ``t`` starts at ``t F`` and every token
``k`` fills its whole patch ``[t F + k P, t F + k P + P)`` (nearest
upsampling), so a pixel's token is centred at ``P floor(y / P) + P // 2``,
up to ``P // 2`` pixels away. Padding ``q`` before and ``T F - q - L``
after; halo ``F - 1``; ``1 / F^2`` forward passes per pixel.

Borders are padded by reflection about the edge pixel (numpy ``"reflect"``,
repeated when a block is narrower than the padding).
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch

from orgaseg.errors import OrgasegError
from orgaseg.features.base import (
    EncodesSquaresPerSlice,
    Region,
    reflected_span,
    resolve_keep,
)
from orgaseg.models.device import resolve_device
from orgaseg.progress import ProgressCallback, report

#: ``encoder(fovs (B, 1, F, F) float32) -> tokens (B, F/P, F/P, D)``.
Encoder = Callable[[torch.Tensor], torch.Tensor]

MODES = ("cover", "stride")


class CoverStride(EncodesSquaresPerSlice):
    """Dense per-pixel features from a 2D token encoder (MAESTER inference).

    Parameters
    ----------
    encoder : callable
        ``encoder(fovs)`` maps a batch of fields of view ``(B, 1, F, F)``
        float32 on ``device`` to tokens ``(B, F/P, F/P, D)``; token
        ``(i, j)`` covers pixels ``[P i, P i + P) x [P j, P j + P)``. It must
        live on ``device`` and be in evaluation mode; it is called under
        :func:`torch.inference_mode`.
    n_features : int
        Token width ``D``.
    fov : int
        Field of view ``F`` in pixels.
    patch : int
        Patch size ``P`` in pixels; ``fov`` must be a multiple of it.
    keep : int, optional
        Central tokens kept per side, ``m`` (cover mode; default 4). Must
        satisfy ``1 <= m <= G`` with ``G - m`` even. In stride mode it must
        be left out or equal ``G``.
    mode : {"cover", "stride"}
        ``"cover"``: cover-and-stride, every pixel gets the token centred on
        it. ``"stride"``: the stride-only ablation, non-overlapping fields of
        view and nearest upsampling of each token to its patch.
    batch_size : int
        Fields of view per forward pass (bounds memory).
    device : str
        Torch device for the fields of view (``"cpu"``, ``"cuda"``,
        ``"auto"`` for CUDA when available).
    progress : callable, optional
        ``progress(description, done, total)`` after every batch.

    Notes
    -----
    The geometry, padding and cost are derived in the module docstring.
    Call the object on a normalised ``(z, y, x)`` block with ``origin`` set to
    the block's absolute corner so that blockwise results equal whole-slice
    results.
    """

    #: Computes a part of a block with the rest as context (``keep``; see FeatureExtractor).
    keeps_region = True

    def __init__(
        self,
        encoder: Encoder,
        *,
        n_features: int,
        fov: int = 80,
        patch: int = 5,
        keep: int | None = None,
        mode: Literal["cover", "stride"] = "cover",
        batch_size: int = 256,
        device: str = "cpu",
        progress: ProgressCallback | None = None,
    ) -> None:
        if mode not in MODES:
            raise OrgasegError(f"dense-feature mode must be one of {MODES}, got {mode!r}")
        check_geometry(fov, patch, n_features, batch_size)
        grid = fov // patch
        if keep is None:
            keep = 4 if mode == "cover" else grid
        if mode == "stride" and keep != grid:
            raise OrgasegError(f"stride-only features use every token: keep must be {grid} (the grid), got {keep}")
        if not 1 <= keep <= grid or (grid - keep) % 2:
            raise OrgasegError(
                f"keep must be between 1 and the token grid ({grid}) and leave an even margin "
                f"(grid - keep even) so the kept tokens are centred, got {keep}"
            )
        self.encoder = encoder
        self.n_features = int(n_features)
        self.fov = int(fov)
        self.patch = int(patch)
        self.grid = grid
        self.keep = int(keep)
        self.mode = mode
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.progress = progress

    # -- geometry (see the module docstring) -----------------------------------------

    @property
    def _first(self) -> int:
        """Index ``a`` of the first kept token."""
        return (self.grid - self.keep) // 2

    @property
    def _period(self) -> int:
        """Tiling period ``S`` in pixels."""
        return self.keep * self.patch

    @property
    def _offsets(self) -> int:
        """Number of sub-patch offsets per axis: ``P`` in cover mode, 1 in stride mode."""
        return self.patch if self.mode == "cover" else 1

    @property
    def _shift(self) -> int:
        """``c``: from a field of view's first pixel to where its first kept token lands."""
        return self.patch * self._first + (self.patch // 2 if self.mode == "cover" else 0)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Context voxels each side ``(z, y, x)`` for exact results inside a block."""
        # the last pixel a field of view serves: its last kept token's centre (cover)
        # or the last pixel of that token's patch (stride); the first is at the shift
        last = self._shift + (self.keep - 1) * self.patch + (self.patch - 1 if self.mode == "stride" else 0)
        reach = max(last, self.fov - 1 - self._shift)
        return (0, reach, reach)

    @property
    def forwards_per_pixel(self) -> float:
        """Encoder forward passes per pixel, away from borders: ``1/m^2`` or ``1/F^2``."""
        return 1.0 / self.keep**2 if self.mode == "cover" else 1.0 / self.fov**2

    def flops_per_pixel(self, encoder_flops_per_fov: float) -> float:
        """Encoder FLOPs per pixel given the FLOPs of one field of view's forward pass.

        Cover-and-stride spends ``P^2`` forward passes per ``(m P)^2`` pixels,
        i.e. ``1 / m^2`` per pixel; stride-only one per ``F^2`` pixels.
        Borders add at most one period of fields of view per axis.
        """
        return float(encoder_flops_per_fov) * self.forwards_per_pixel

    def _axis_plan(self, length: int, origin: int) -> tuple[int, int, tuple[int, int]]:
        """``(T, q, (pad_before, pad_after))`` for one axis of a block."""
        period = self._period
        t0 = origin // period
        count = (origin + length - 1) // period - t0 + 1
        q = origin - t0 * period
        before = self._shift + q
        after = (count - 1) * period + self._offsets - 1 + self.fov - before - length
        return count, q, (before, after)

    def _axis_fields_of_view(self, length: int, origin: int) -> int:
        """Fields of view along y or x for a block spanning ``length`` pixels from ``origin``: ``T`` times the offsets."""
        return self._axis_plan(length, origin)[0] * self._offsets


    def config(self) -> dict:
        """A JSON-serialisable description (for provenance and signatures)."""
        return {
            "kind": "cover_stride",
            "mode": self.mode,
            "fov": self.fov,
            "patch": self.patch,
            "keep": self.keep,
            "n_features": self.n_features,
        }

    # -- features ----------------------------------------------------------------------

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: Region | None = None) -> np.ndarray:
        """Per-pixel token features of a normalised block.

        Parameters
        ----------
        block : ndarray, shape (z, y, x)
            Normalised intensities; each z slice is encoded on its own.
        origin : tuple of int
            Absolute ``(z, y, x)`` index of ``block[0, 0, 0]`` in the volume;
            the tiling is anchored at absolute 0 so that a pixel's feature
            does not depend on how the volume was cut into blocks.
        keep : tuple of slice, optional
            The part of ``block`` whose features are returned (default all of
            it); the rest is context. Only the fields of view that serve the
            part are encoded, and they read the context where the block holds
            it: the same values as the whole block's features cropped to
            ``keep`` when the context is at least :attr:`halo` wide or ends at
            the volume's edge.

        Returns
        -------
        ndarray, shape (z, y, x, n_features) of ``block[keep]``, float32
            A view into a buffer at most one tiling period larger per axis.
        """
        block = check_block(block, origin, "cover-and-stride")
        keep = resolve_keep(keep, block.shape)
        depth, height, width = (s.stop - s.start for s in keep)
        part = tuple(int(o) + s.start for o, s in zip(origin, keep))
        ty, qy, pad_y = self._axis_plan(height, part[1])
        tx, qx, pad_x = self._axis_plan(width, part[2])
        padded = reflected_span(block[keep[0]], origin[1:], ((part[1] - pad_y[0], part[1] + height + pad_y[1]),
                                                              (part[2] - pad_x[0], part[2] + width + pad_x[1])))
        # every F x F window of every slice, as a view: fancy indexing gathers one batch
        # (numpy's gather is ~30x faster than torch's indexing of an unfolded view on CPU)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (self.fov, self.fov), axis=(1, 2))

        m, p, period = self.keep, self.patch, self._period
        # one buffer of T S pixels per axis; buffer pixel j S + k P + d <-> [j, k, d]
        out = np.empty((depth, ty * period, tx * period, self.n_features), dtype=np.float32)
        grid_view = out.reshape(depth, ty, m, p, tx, m, p, self.n_features)
        n_offsets = self._offsets
        total = depth * ty * tx * n_offsets**2
        n_batches = -(-total // self.batch_size)
        description = "cover-and-stride features" if self.mode == "cover" else "stride-only features"
        with torch.inference_mode():
            for batch in range(n_batches):
                flat = np.arange(batch * self.batch_size, min(total, (batch + 1) * self.batch_size))
                zi, jy, jx, dy, dx = np.unravel_index(flat, (depth, ty, tx, n_offsets, n_offsets))
                fovs = torch.from_numpy(windows[zi, jy * period + dy, jx * period + dx]).to(self.device)
                kept = self._kept_tokens(fovs.unsqueeze(1))
                if self.mode == "cover":
                    grid_view[zi, jy, :, dy, jx, :, dx] = kept
                else:  # nearest upsampling: each token fills its P x P patch
                    grid_view[zi, jy, :, :, jx, :, :] = kept[:, :, None, :, None, :]
                report(self.progress, description, batch + 1, n_batches)
        return out[:, qy : qy + height, qx : qx + width]

    def _kept_tokens(self, fovs: torch.Tensor) -> np.ndarray:
        """Encode a batch and return its central ``m x m`` tokens as float32 numpy."""
        tokens = encode_checked(self.encoder, fovs, self.fov, self.patch, self.n_features)
        kept = slice(self._first, self._first + self.keep)
        return tokens[:, kept, kept].float().cpu().numpy()


class StrideOnly(CoverStride):
    """The stride-only ablation: ``CoverStride(encoder, mode="stride", ...)``.

    Non-overlapping fields of view, each token upsampled to its patch by
    nearest neighbour (paper Table 4f). Takes the same keyword arguments as
    :class:`CoverStride` except ``mode``.
    """

    def __init__(self, encoder: Encoder, **kwargs) -> None:
        super().__init__(encoder, mode="stride", **kwargs)


def check_geometry(fov: int, patch: int, n_features: int, batch_size: int) -> None:
    """Refuse a field of view that is not a multiple of the patch, and non-positive widths or batches."""
    if patch < 1 or fov < 1 or fov % patch:
        raise OrgasegError(f"the field of view ({fov} px) must be a positive multiple of the patch size ({patch} px)")
    if n_features < 1:
        raise OrgasegError(f"n_features must be positive, got {n_features}")
    if batch_size < 1:
        raise OrgasegError(f"batch size must be positive, got {batch_size}")


def check_block(block: np.ndarray, origin: tuple[int, int, int], strategy: str) -> np.ndarray:
    """A non-empty float32 ``(z, y, x)`` block and a valid origin, or a clear error naming ``strategy``."""
    block = np.asarray(block, dtype=np.float32)
    if block.ndim != 3 or min(block.shape) < 1:
        raise OrgasegError(f"{strategy} needs a non-empty 3D block (z, y, x), got shape {block.shape}")
    if len(origin) != 3 or min(origin) < 0:
        raise OrgasegError(f"block origin must be three non-negative indices (z, y, x), got {origin}")
    return block


def encode_checked(encoder: Encoder, fovs: torch.Tensor, fov: int, patch: int, n_features: int) -> torch.Tensor:
    """``encoder(fovs)``, checked to be a ``(B, fov/patch, fov/patch, n_features)`` token grid."""
    tokens = encoder(fovs)
    expected = (fovs.shape[0], fov // patch, fov // patch, n_features)
    if tuple(tokens.shape) != expected:
        raise OrgasegError(
            f"the encoder returned tokens of shape {tuple(tokens.shape)}, expected {expected} "
            f"(batch, fov/patch, fov/patch, n_features) for fov {fov}, patch {patch}"
        )
    return tokens
