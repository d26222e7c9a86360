"""The classical floor: a multi-scale filter bank per voxel, then k-means."""

from __future__ import annotations

from orgaseg.errors import OrgasegError
from orgaseg.features.filterbank import DEFAULT_SCALES_NM, FilterBank
from orgaseg.io.volume import Volume
from orgaseg.methods.registry import Method, register


def build_filterbank(volume: Volume, checkpoint=None, options: dict | None = None, device: str = "cpu") -> FilterBank:
    """The baseline's features for ``volume`` (options: ``scales_nm``, ``in_plane``)."""
    options = dict(options or {})
    scales = tuple(options.pop("scales_nm", DEFAULT_SCALES_NM))
    in_plane = options.pop("in_plane", None)
    if options:
        raise OrgasegError(f"unknown option(s) for the baseline: {', '.join(sorted(options))}")
    return FilterBank(voxel_size=volume.voxel_size, scales_nm=scales, in_plane=in_plane)


BASELINE = register(
    Method(
        name="baseline",
        summary="classical floor: Gaussian/gradient/LoG/local-std/Hessian filter bank at nm scales + k-means",
        learns=False,
        build_features=build_filterbank,
    )
)
