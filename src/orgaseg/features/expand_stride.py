"""Expand-stride dense features: token grids upsampled to pixels and blended (HiS4MAE inference).

Cover-and-stride (:mod:`orgaseg.features.cover_stride`) spends one encoder
forward pass per ``m^2`` pixels (1/16 at the paper's m = 4). Expand-stride
places fields of view every ``S`` pixels, upsamples each field of view's
``G x G`` token grid to its ``F x F`` pixels by bilinear interpolation, and
blends overlapping fields of view with a smooth weight: one forward pass per
``S^2`` pixels (1/1600 at S = 40), at the price of interpolated rather than
centred tokens. Works with any encoder that maps ``(B, 1, F, F)`` fields of
view to ``(B, G, G, D)`` tokens (MAESTER, HiS4MAE, sdae-recon).

Geometry (one axis; the other is the same)
------------------------------------------
Token ``i`` of a field of view covers pixels ``[P i, P i + P)``; its centre is
at the continuous position ``P i + (P - 1) / 2`` (pixel ``P i + P // 2`` for
odd ``P``). Bilinear upsampling by ``P`` with half-pixel alignment (torch
``align_corners=False``) puts token ``i``'s value exactly there and
interpolates linearly between neighbouring centres; the outer ``(P - 1) / 2``
pixels of the field of view take the value of the outermost token.

Field of view ``t`` (any integer) starts at absolute coordinate
``t S - h`` with ``h = (F - S) // 2``, so it is centred on the cell
``[t S, t S + S)``; the tiling is anchored at absolute 0 (``origin``), so a
pixel's feature does not depend on how the volume is cut into blocks. Each
field of view's upsampled tokens are weighted by ``w(i) w(j)`` with
``w(i) = sin^2(pi (i + 1/2) / F)`` (a Hann window, never zero on a pixel), the
weighted contributions of all fields of view covering a pixel are summed and
divided by the summed weights. At ``S = F / 2`` the weights of the two fields
of view covering a pixel sum to one per axis; at ``S = F`` every pixel lies in
exactly one field of view and gets its interpolated tokens unweighted.

For a block of length ``L`` at absolute ``o`` the fields of view
``t = floor((o - F + h) / S) + 1 .. floor((o + L + h - 1) / S)`` overlap it;
the block is padded by reflection to cover them all. Context (halo): ``F - 1``
pixels each side in y and x; z halo 0 (each slice is encoded on its own).
Valid strides: ``1 <= S <= F``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from orgaseg.errors import OrgasegError
from orgaseg.features.base import EncodesSquaresPerSlice, Region, reflected_span, resolve_keep
from orgaseg.features.cover_stride import Encoder, check_block, check_geometry, encode_checked
from orgaseg.models.device import resolve_device
from orgaseg.progress import ProgressCallback, report


def blend_weight(fov: int) -> np.ndarray:
    """The 1D blending weight of a field of view: ``sin^2(pi (i + 1/2) / fov)``, ``i = 0 .. fov - 1``."""
    return np.sin(np.pi * (np.arange(fov) + 0.5) / fov) ** 2


def expansion_matrix(fov: int, patch: int) -> torch.Tensor:
    """``(fov, fov / patch)`` matrix of 1D bilinear upsampling by ``patch`` (half-pixel aligned, edges clamped).

    Row ``y`` holds the weights of the tokens that pixel ``y`` interpolates;
    the 2D upsampling of a token grid ``T`` is ``U T U^T``, which runs as two
    matrix products instead of an interpolation kernel.
    """
    grid = fov // patch
    identity = torch.eye(grid, dtype=torch.float64)[None]  # channels = tokens, length = grid
    upsampled = F.interpolate(identity, scale_factor=patch, mode="linear", align_corners=False)
    return upsampled[0].T.float().contiguous()


class ExpandStride(EncodesSquaresPerSlice):
    """Dense per-pixel features from a 2D token encoder by bilinear expansion of strided fields of view.

    Parameters
    ----------
    encoder : callable
        ``encoder(fovs)`` maps ``(B, 1, F, F)`` float32 on ``device`` to
        tokens ``(B, F/P, F/P, D)``; called under :func:`torch.inference_mode`.
    n_features : int
        Token width ``D``.
    fov : int
        Field of view ``F`` in pixels.
    patch : int
        Patch size ``P``; ``fov`` must be a multiple of it.
    stride : int, optional
        Pixels between neighbouring fields of view, ``1 <= S <= F``
        (default ``F // 2``).
    batch_size : int
        Fields of view per forward pass.
    device : str
        Torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
    progress : callable, optional
        ``progress(description, done, total)`` after every batch.
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
        stride: int | None = None,
        batch_size: int = 256,
        device: str = "cpu",
        progress: ProgressCallback | None = None,
    ) -> None:
        check_geometry(fov, patch, n_features, batch_size)
        stride = fov // 2 if stride is None else stride
        if not 1 <= stride <= fov:
            raise OrgasegError(f"the expand-stride stride must be between 1 and the field of view ({fov} px), "
                               f"got {stride}: a larger stride would leave pixels without a field of view")
        self.encoder = encoder
        self.n_features = int(n_features)
        self.fov = int(fov)
        self.patch = int(patch)
        self.grid = self.fov // self.patch
        self.stride = int(stride)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.progress = progress
        weight = blend_weight(self.fov)
        self._weight = torch.from_numpy(np.outer(weight, weight).astype(np.float32)).to(self.device)
        self._expansion = expansion_matrix(self.fov, self.patch).mul_(torch.from_numpy(weight).float()[:, None])
        self._expansion = self._expansion.to(self.device)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Context voxels each side ``(z, y, x)``: a field of view reaches ``F - 1`` pixels past a pixel it covers."""
        return (0, self.fov - 1, self.fov - 1)

    @property
    def forwards_per_pixel(self) -> float:
        """Encoder forward passes per pixel away from borders: ``1 / S^2``."""
        return 1.0 / self.stride**2

    def flops_per_pixel(self, encoder_flops_per_fov: float) -> float:
        """Encoder FLOPs per pixel given those of one field of view (upsampling and blending excluded)."""
        return float(encoder_flops_per_fov) * self.forwards_per_pixel

    def _axis_plan(self, length: int, origin: int) -> tuple[int, int, int]:
        """``(first field of view t0, count T, padding before)`` for one axis of a block."""
        shift = (self.fov - self.stride) // 2
        first = math.floor((origin - self.fov + shift) / self.stride) + 1
        last = (origin + length + shift - 1) // self.stride
        return first, last - first + 1, origin - (first * self.stride - shift)

    def _axis_fields_of_view(self, length: int, origin: int) -> int:
        """Fields of view along y or x for a block spanning ``length`` pixels from ``origin``."""
        return self._axis_plan(length, origin)[1]


    def config(self) -> dict:
        """A JSON-serialisable description (for provenance and signatures)."""
        return {"kind": "expand_stride", "fov": self.fov, "patch": self.patch, "stride": self.stride,
                "n_features": self.n_features}

    def __call__(self, block: np.ndarray, *, origin: tuple[int, int, int] = (0, 0, 0),
                 keep: Region | None = None) -> np.ndarray:
        """Per-pixel features of a normalised block.

        Parameters
        ----------
        block : ndarray, shape (z, y, x)
            Normalised intensities; each z slice is encoded on its own.
        origin : tuple of int
            Absolute ``(z, y, x)`` index of ``block[0, 0, 0]`` (the tiling is
            anchored at absolute 0).
        keep : tuple of slice, optional
            The part of ``block`` whose features are returned (default all of
            it); only the fields of view overlapping it are encoded, reading
            the rest of the block as context (as for cover-and-stride).

        Returns
        -------
        ndarray, shape (z, y, x, n_features) of ``block[keep]``, float32
        """
        block = check_block(block, origin, "expand-stride")
        keep = resolve_keep(keep, block.shape)
        depth, height, width = (s.stop - s.start for s in keep)
        part = tuple(int(o) + s.start for o, s in zip(origin, keep))
        fov, stride = self.fov, self.stride
        _, ty, before_y = self._axis_plan(height, part[1])
        _, tx, before_x = self._axis_plan(width, part[2])
        padded_h, padded_w = (ty - 1) * stride + fov, (tx - 1) * stride + fov
        padded = reflected_span(block[keep[0]], origin[1:], ((part[1] - before_y, part[1] - before_y + padded_h),
                                                              (part[2] - before_x, part[2] - before_x + padded_w)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (fov, fov), axis=(1, 2))

        # the summed weights are the same for every slice
        weight_sum = torch.zeros(padded_h, padded_w, 1, device=self.device)
        for jy in range(ty):
            for jx in range(tx):
                weight_sum[jy * stride : jy * stride + fov, jx * stride : jx * stride + fov, 0] += self._weight
        norm = weight_sum[before_y : before_y + height, before_x : before_x + width]
        columns = slice(before_x, before_x + width)
        out = np.empty((depth, height, width, self.n_features), dtype=np.float32)
        per_slice = ty * tx
        total = depth * per_slice
        n_batches = -(-total // self.batch_size)
        grid = self.grid
        slice_tokens = torch.empty(per_slice, grid, grid, self.n_features, device=self.device)
        with torch.inference_mode():
            for batch in range(n_batches):
                flat = np.arange(batch * self.batch_size, min(total, (batch + 1) * self.batch_size))
                zi, jy, jx = np.unravel_index(flat, (depth, ty, tx))
                fovs = torch.from_numpy(windows[zi, jy * stride, jx * stride]).to(self.device)
                tokens = encode_checked(self.encoder, fovs.unsqueeze(1), self.fov, self.patch, self.n_features)
                # a batch's fields of view are consecutive: each slice's run of them fills its token grids
                row = 0
                while row < len(flat):
                    first = int(flat[row] % per_slice)
                    count = min(len(flat) - row, per_slice - first)
                    slice_tokens[first : first + count] = tokens[row : row + count]
                    if first + count == per_slice:
                        plane = self._blended(slice_tokens.view(ty, tx, grid, grid, -1), padded_h, padded_w, columns)
                        out[zi[row]] = (plane[before_y : before_y + height] / norm).cpu().numpy()
                    row += count
                report(self.progress, "expand-stride features", batch + 1, n_batches)
        return out

    def _blended(self, tokens: torch.Tensor, height: int, width: int, columns: slice) -> torch.Tensor:
        """One slice's token grids ``(Ty, Tx, G, G, D)`` upsampled, weighted and summed: ``(height, columns, D)``.

        Upsampling and weighting are separable, so the sum over the fields of
        view runs one axis at a time: x first (every field of view's token
        rows expanded to pixels and summed along its row of fields of view),
        then y (each row's expanded tokens), only for the columns returned.
        Two matrix products per row or column of fields of view instead of
        one ``F x F x D`` block per field of view.
        """
        fov, stride = self.fov, self.stride
        ty, tx, grid, _, depth = tokens.shape
        rows = torch.zeros(ty, grid, width, depth, device=self.device)
        for jx in range(tx):
            rows[:, :, jx * stride : jx * stride + fov] += torch.einsum("xj,aijd->aixd", self._expansion, tokens[:, jx])
        rows = rows[:, :, columns]
        plane = torch.zeros(height, rows.shape[2], depth, device=self.device)
        for jy in range(ty):
            plane[jy * stride : jy * stride + fov] += torch.einsum("yi,ixd->yxd", self._expansion, rows[jy])
        return plane
