"""The dense-feature stage: the filter bank and the token-to-pixel strategies of 2D token encoders.

:data:`FEATURES` is the explicit table of strategies ``--features`` offers.
A strategy that ``needs`` an encoder works with any encoder of that kind
(:mod:`orgaseg.models.encoder`), whatever method trained it.
"""

from __future__ import annotations

import dataclasses

from orgaseg.options import lookup
from orgaseg.features.base import FeatureExtractor, FeatureSpec

#: Fields of view per forward pass when none is given. On a CPU small batches run faster per field of view (their
#: activations stay in the caches: MAESTER's and HiS4MAE's ``cpu`` encoders ran 1.5-1.8x faster per field of view
#: in batches of 32 than of 256 on the project's 2-core machine, hand-run); a GPU wants large ones.
BATCH_SIZE = {"cpu": 32, "cuda": 256}

_TOKEN_OPTIONS = {"batch_size": f"fields of view per forward pass (default {BATCH_SIZE['cpu']} on a CPU, "
                                f"{BATCH_SIZE['cuda']} on a GPU)",
                  "planes": "planes whose features are averaged, for near-isotropic data: xy (default) or e.g. xy,xz,yz"}


def _build_filter_bank(encoder, voxel_size, options: dict, device: str):
    from orgaseg.features.filterbank import DEFAULT_SCALES_NM, FilterBank

    return FilterBank(voxel_size=tuple(voxel_size), scales_nm=tuple(options.get("scales_nm", DEFAULT_SCALES_NM)),
                      in_plane=options.get("in_plane"))


def _token_geometry(encoder, options: dict, device: str) -> dict:
    from orgaseg.models.device import resolve_device

    default = BATCH_SIZE["cpu" if resolve_device(device).type == "cpu" else "cuda"]
    return dict(fov=encoder.fov, patch=encoder.patch, n_features=encoder.n_features,
                batch_size=int(options.get("batch_size", default)), device=device)


def _build_cover_stride(encoder, voxel_size, options: dict, device: str):
    from orgaseg.features.cover_stride import CoverStride

    keep = options.get("keep")
    return CoverStride(encoder.encode, keep=None if keep is None else int(keep), **_token_geometry(encoder, options, device))


def _build_stride_only(encoder, voxel_size, options: dict, device: str):
    from orgaseg.features.cover_stride import StrideOnly

    return StrideOnly(encoder.encode, **_token_geometry(encoder, options, device))


def _build_expand_stride(encoder, voxel_size, options: dict, device: str):
    from orgaseg.features.expand_stride import ExpandStride

    stride = options.get("stride")
    return ExpandStride(encoder.encode, stride=None if stride is None else int(stride),
                        **_token_geometry(encoder, options, device))


def _build_voxel_latents(encoder, voxel_size, options: dict, device: str):
    from orgaseg.features.voxel_latents import DEFAULT_STRIDE, VoxelLatents

    return VoxelLatents(encoder.encode, latent=encoder.n_features, voxel_size=voxel_size, ndim=encoder.ndim,
                        patch=encoder.patch, radius=float(options.get("radius", encoder.radius)),
                        stride=int(options.get("stride", DEFAULT_STRIDE)), subspace=options.get("subspace", "semantic"),
                        semantic=encoder.semantic, batch_size=int(options.get("batch_size", 1024)), device=device)


_VOXEL_LATENT_OPTIONS = {
    "stride": "latents every STRIDE working pixels in-plane (z: the same nm), interpolated between (default 2; 1: "
              "one patch per voxel)",
    "radius": "patch half-extent in working pixels (default: the checkpoint's, 4)",
    "subspace": "'semantic' (the first 8 latent dimensions, default) or 'all'",
    "batch_size": "patches per forward pass (default 1024)",
}


def _in_planes(build):
    """``build`` with its 2D strategy run on the planes of the ``planes`` option (:mod:`orgaseg.features.planes`)."""

    def build_in_planes(encoder, voxel_size, options: dict, device: str):
        from orgaseg.features.planes import fuse_planes

        return fuse_planes(build(encoder, voxel_size, options, device), options.get("planes"), voxel_size)

    return build_in_planes


_CONTEXT_HELP = ("superpixel sizes in working pixels, e.g. 100 or 100,400: [mean || std] of the features over each "
                 "voxel's SLIC superpixel of each size are appended (default none)")

def _with_context(spec: FeatureSpec) -> FeatureSpec:
    """``spec`` with the ``context`` option: superpixel means and spreads appended to its features."""

    def build_with_context(encoder, voxel_size, options: dict, device: str):
        from orgaseg.features.context import SuperpixelContext, parse_context

        extractor = spec.build(encoder, voxel_size, options, device)
        sizes = parse_context(options.get("context"))
        return SuperpixelContext(extractor, sizes) if sizes else extractor

    return dataclasses.replace(spec, build=build_with_context, options={**spec.options, "context": _CONTEXT_HELP})


#: The dense-feature strategies, by name.
FEATURES: dict[str, FeatureSpec] = {
    spec.name: _with_context(spec)
    for spec in (
        FeatureSpec("filter-bank", "Gaussian, gradient, LoG, local std and Hessian eigenvalues at scales in nm",
                    needs=None, build=_build_filter_bank,
                    options={"scales_nm": "Gaussian scales in nm (default [10, 20, 40, 80, 160])",
                             "in_plane": "filter each slice in 2D (default: when z is over 2x coarser)"}),
        FeatureSpec("cover-stride", "every pixel gets the token centred on it (MAESTER); 1/keep^2 forward passes per pixel",
                    needs="tokens-2d", build=_in_planes(_build_cover_stride),
                    options={"keep": "central tokens kept per side of a field of view (default 4)", **_TOKEN_OPTIONS}),
        FeatureSpec("stride-only", "non-overlapping fields of view, each token fills its patch (ablation)",
                    needs="tokens-2d", build=_in_planes(_build_stride_only), options=dict(_TOKEN_OPTIONS)),
        FeatureSpec("expand-stride", "token grids of strided fields of view upsampled and blended (HiS4MAE)",
                    needs="tokens-2d", build=_in_planes(_build_expand_stride),
                    options={"stride": "pixels between fields of view (default half the field of view)", **_TOKEN_OPTIONS}),
        FeatureSpec("voxel-latents", "latent mean of the 16^3 patch centred on each voxel (Han et al.), on a strided grid",
                    needs="voxels-3d", build=_build_voxel_latents, options=dict(_VOXEL_LATENT_OPTIONS)),
        FeatureSpec("voxel-latents-2d", "latent mean of the 16^2 patch centred on each pixel, section by section",
                    needs="voxels-2d", build=_build_voxel_latents, options=dict(_VOXEL_LATENT_OPTIONS)),
    )
}


def get_features(name: str | FeatureSpec) -> FeatureSpec:
    """The strategy called ``name`` (a spec is returned unchanged); a clear error listing the known ones."""
    return name if isinstance(name, FeatureSpec) else lookup(FEATURES, name, "dense features")


__all__ = ["FEATURES", "FeatureExtractor", "FeatureSpec", "get_features"]
