"""A run's three stages, resolved: the method's defaults, the user's overrides, the working pixel size.

:func:`resolve_stages` turns a method name, an optional checkpoint and the
overrides of the command line (``--features``, ``--clusterer``,
``--option NAME=VALUE``, ``--pixel-size``) into :class:`Stages`: the loaded
encoder (if the features need one), the dense-feature and clusterer specs
with their options, and the working pixel size. :meth:`Stages.job` then
builds the block job of one volume. Nothing here knows which encoder,
features or clusterer it holds: they come from the tables of
:mod:`orgaseg.models.encoder`, :mod:`orgaseg.features` and :mod:`orgaseg.cluster`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

from orgaseg.cluster import ClustererSpec, get_clusterer
from orgaseg.errors import OrgasegError, OrgasegWarning, about_volume, arg
from orgaseg.features import FEATURES, FeatureSpec, get_features
from orgaseg.io.metadata import format_sizes
from orgaseg.methods.table import METHODS, Method, get_method
from orgaseg.options import check_option_value
from orgaseg.pipeline.resample import WorkingGrid
from orgaseg.pipeline.tasks import BlockJob, VolumeSource

#: ``--pixel-size native``: work on the input's own grid.
NATIVE = "native"


def resolve_pixel_size(value: float | str | None, default: float | None) -> float | None:
    """The working pixel size in nm: ``value`` (a number or ``"native"``), else ``default``; None means native."""
    if value is None:
        return default
    if isinstance(value, str):
        if value.strip().lower() == NATIVE:
            return None
        try:
            value = float(value)
        except ValueError:
            raise OrgasegError(f"the pixel size must be a number of nm or 'native', got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise OrgasegError(f"the pixel size must be a positive number of nm or 'native', got {value!r}")
    return float(value)


def split_options(options: Mapping[str, Any] | None, features: FeatureSpec, clusterer: ClustererSpec, *,
                  unlisted: Collection[str] = ()) -> tuple[dict, dict]:
    """Route ``NAME=VALUE`` options to the stage that declares ``NAME`` (``features.NAME`` / ``clusterer.NAME`` to say which).

    ``unlisted``: options the caller takes as arguments of its own (and refuses as options), left out of the
    options an unknown name's message lists.
    """
    feature_options: dict = {}
    clusterer_options: dict = {}
    for name, value in (options or {}).items():
        stage, dot, bare = name.partition(".")
        value = check_option_value(bare if dot else name, value)
        if dot:
            if stage not in ("features", "clusterer"):
                raise OrgasegError(f"option {name!r}: the prefix must be 'features.' or 'clusterer.'")
            spec, target = (features, feature_options) if stage == "features" else (clusterer, clusterer_options)
            if bare not in spec.options:
                raise OrgasegError(f"{spec.name} has no option {bare!r}; its options: {_names(spec.options, unlisted)}")
            target[bare] = value
            continue
        in_features, in_clusterer = name in features.options, name in clusterer.options
        if in_features and in_clusterer:
            raise OrgasegError(f"option {name!r} belongs to both {features.name} and {clusterer.name}: "
                               f"write features.{name} or clusterer.{name}")
        if not (in_features or in_clusterer):
            raise OrgasegError(f"unknown option {name!r}: {features.name} takes {_names(features.options, unlisted)}; "
                               f"{clusterer.name} takes {_names(clusterer.options, unlisted)}")
        (feature_options if in_features else clusterer_options)[name] = value
    return feature_options, clusterer_options


def _names(options: Mapping, unlisted: Collection[str] = ()) -> str:
    names = [name for name in options if name not in unlisted]
    return ", ".join(names) if names else "none"


#: A working pixel this many times finer than the input's in-plane voxel is warned about (upsampling).
UPSAMPLING_WARNING = 1.25

#: A method's default pixel size this many times coarser than the input's in-plane voxel is warned about: the
#: input's voxel size may be wrong (a header in Å read as nm would be tenfold), or the volume sampled finer
#: than the method's default suits.
COARSENING_WARNING = 8.0

#: An input pixel this many times wider or narrower than a native-pixel checkpoint's training pixels is warned about.
NATIVE_PIXEL_WARNING = 1.25


def check_native_pixel(encoder, checkpoint, volume, *, stacklevel: int = 2) -> None:
    """Warn when an encoder trained on its volumes' own pixels reads a volume of other pixels at theirs.

    Its fields of view then cover another width in nm than the ones it
    learned from (a checkpoint trained at a pixel size resamples any
    volume to it, so only native-pixel checkpoints can meet this).
    """
    if encoder is None or encoder.pixel_size_nm is not None or volume.attrs.get("voxel_size_assumed"):
        return
    trained = sorted(min(v["voxel_size"][1:]) for v in encoder.record.get("training_volumes") or ()
                     if not v.get("voxel_size_assumed"))
    if not trained:
        return
    here, there = min(volume.voxel_size[1:]), trained[len(trained) // 2]
    if max(here / there, there / here) > NATIVE_PIXEL_WARNING:
        warnings.warn(OrgasegWarning(
            f"{checkpoint} was trained on {there:g} nm pixels (its volumes' own) and reads this volume's "
            f"{here:g} nm pixels as they are: its fields of view cover {here / there:.2g}x the width it learned "
            f"from; a pixel size of {there:g} nm ({arg('pixel_size')}) resamples this volume to its training "
            "pixels"), stacklevel=stacklevel + 1)


@dataclass
class Stages:
    """The resolved stages of a run.

    Attributes
    ----------
    method : Method
        The method whose defaults were used.
    features : FeatureSpec
        Dense features, with ``feature_options``.
    clusterer : ClustererSpec
        Clusterer, with ``clusterer_options``.
    encoder : Encoder or None
        The loaded encoder (None when the features need none).
    pixel_size_nm : float or None
        Working pixel size (None: each input's own grid).
    device : str
        Where the encoder runs.
    checkpoint : str or None
        The checkpoint's path.
    coarsen_only : bool
        The pixel size is the method's default: inputs already coarser keep their own grid.
    """

    method: Method
    features: FeatureSpec
    clusterer: ClustererSpec
    feature_options: dict = field(default_factory=dict)
    clusterer_options: dict = field(default_factory=dict)
    encoder: Any = None
    pixel_size_nm: float | None = None
    device: str = "cpu"
    checkpoint: str | None = None
    coarsen_only: bool = False

    def grid(self, volume) -> WorkingGrid | None:
        """The working grid of ``volume`` (None when the run works on its own grid).

        A pixel size that is the method's default only ever coarsens: data
        already at or above it keeps its own grid (upsampling would add work,
        not information), and so does a volume whose voxel size is unknown
        (assumed 1 nm). A pixel size the user gave is used as given.
        """
        if self.pixel_size_nm is None:
            check_native_pixel(self.encoder, self.checkpoint, volume, stacklevel=4)
            return None
        if self.coarsen_only and (min(volume.voxel_size[1:]) >= self.pixel_size_nm
                                  or volume.attrs.get("voxel_size_assumed")):
            return None  # a default never resamples a volume whose voxel size is a guess
        grid = WorkingGrid.for_pixel_size(volume.shape, volume.voxel_size, self.pixel_size_nm,
                                          coarsen_only=self.coarsen_only)
        finer = min(volume.voxel_size[1:]) / self.pixel_size_nm
        if self.coarsen_only and 1 / finer > COARSENING_WARNING:
            warnings.warn(OrgasegWarning(
                f"the method's default pixel size, {self.pixel_size_nm:g} nm, is {1 / finer:.0f}x coarser than the "
                f"input's {min(volume.voxel_size[1:]):g} nm: a section of {volume.shape[1]} x {volume.shape[2]} "
                f"voxels is computed on {grid.shape[1]} x {grid.shape[2]} working pixels. Is the voxel size right "
                f"({format_sizes(volume.voxel_size)} nm)? If it is, a finer {arg('pixel_size')} (or 'native') keeps "
                "more detail"), stacklevel=2)
        if finer > UPSAMPLING_WARNING and not volume.attrs.get("voxel_size_assumed"):
            warnings.warn(OrgasegWarning(
                f"the working pixel size, {self.pixel_size_nm:g} nm, is {finer:.1f}x finer than the input's "
                f"{min(volume.voxel_size[1:]):g} nm: the features are computed on an upsampled grid of "
                f"{math.prod(grid.shape) / volume.size:.1f}x the voxels, which adds time, not information "
                f"(the input's grid is kept with 'native' for {arg('pixel_size')})"), stacklevel=2)
        return None if grid.is_identity else grid

    def job(self, source: VolumeSource, normalization, *, features_out=None) -> BlockJob:
        """The block job of one volume: its features at the working voxel size, its grid."""
        volume = source.volume
        grid = self.grid(volume)
        voxel_size = grid.working_voxel_size if grid is not None else volume.voxel_size
        try:
            extractor = self.features.build(self.encoder, voxel_size, self.feature_options, self.device)
            check_shape = getattr(extractor, "check_shape", None)  # one that cannot featurise volumes of every shape
            if check_shape is not None:
                check_shape(grid.shape if grid is not None else volume.shape)
        except OrgasegError as error:  # e.g. scales finer than this volume's voxel: say which volume
            raise about_volume(error, volume.path) from None
        tile = self.clusterer.plane_tile_nm
        return BlockJob(source, normalization, extractor, grid=grid, features_out=features_out,
                        plane_tile_nm=tile(self.clusterer_options) if tile is not None else None)

    def sample_size(self, n_voxels: int) -> int:
        """The default sample: the method's rule, else the clusterer's default."""
        if self.method.sample_size is not None and self.clusterer.name == self.method.clusterer:
            return self.method.sample_size(n_voxels)
        return self.clusterer.default_sample_size

    def config(self) -> dict:
        """What the stages are (provenance, resume signatures, results).

        ``pixel_size_nm`` is the requested working pixel size; whether a volume
        was resampled to it (a method's default leaves coarser inputs alone) is
        its working grid, recorded beside this.
        """
        return {
            "method": self.method.name,
            "encoder": self.encoder.describe() if self.encoder is not None else None,
            "features": self.features.name,
            "feature_options": _jsonable(self.feature_options),
            "clusterer": self.clusterer.name,
            "clusterer_options": _jsonable(self.clusterer_options),
            "pixel_size_nm": self.pixel_size_nm,
        }


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def resolve_specs(
    method: str | Method,
    *,
    features: str | FeatureSpec | None = None,
    clusterer: str | ClustererSpec | None = None,
    options: Mapping[str, Any] | None = None,
    unlisted_options: Collection[str] = (),
) -> tuple[Method, FeatureSpec, ClustererSpec, dict, dict]:
    """The method's row, its feature and clusterer specs with the given overrides, and ``options`` routed to
    them (:func:`split_options`): everything of :func:`resolve_stages` that needs no checkpoint, so a caller
    that trains one first can check the rest before the training (parameters as there).

    Returns
    -------
    tuple
        ``(method, features, clusterer, feature_options, clusterer_options)``.
    """
    if options is not None and not isinstance(options, Mapping):
        raise OrgasegError(f"options must be a dict {{name: value}} (e.g. {{'stride': 20}}), got {options!r}")
    row = get_method(method)
    feature_spec = get_features(features if features is not None else row.features)
    clusterer_spec = get_clusterer(clusterer if clusterer is not None else row.clusterer)
    feature_options, clusterer_options = split_options({**row.options, **dict(options or {})}, feature_spec,
                                                       clusterer_spec, unlisted=unlisted_options)
    return row, feature_spec, clusterer_spec, feature_options, clusterer_options


def resolve_stages(
    method: str | Method,
    *,
    model: str | Path | None = None,
    features: str | FeatureSpec | None = None,
    clusterer: str | ClustererSpec | None = None,
    options: Mapping[str, Any] | None = None,
    pixel_size: float | str | None = None,
    device: str = "auto",
    unlisted_options: Collection[str] = (),
) -> Stages:
    """The stages of a run: the method's defaults with the given overrides.

    Parameters
    ----------
    method : str or Method
        A row of the method table.
    model : path, optional
        Checkpoint of the method's encoder (needed when the features need an encoder).
    features, clusterer : str or spec, optional
        Override the method's dense features or clusterer.
    options : mapping, optional
        Stage options ``NAME -> value`` (see :func:`split_options`), over the method's defaults.
    pixel_size : float, "native" or None
        Working pixel size in nm. None: the checkpoint's training pixel size
        for an encoder, else the method's default.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    unlisted_options : collection of str
        Stage options the caller takes as arguments of its own, left out of
        the options an unknown option's message lists (see :func:`split_options`).

    Returns
    -------
    Stages
    """
    row, feature_spec, clusterer_spec, feature_options, clusterer_options = resolve_specs(
        method, features=features, clusterer=clusterer, options=options, unlisted_options=unlisted_options)
    encoder = None
    device_name = "cpu"
    if feature_spec.needs is not None:
        from orgaseg.models.device import resolve_device
        from orgaseg.models.encoder import ENCODERS, load_encoder

        if model is None:
            fitting = [name for name, m in METHODS.items() if m.learns and ENCODERS[m.encoder].kind == feature_spec.needs]
            own = ("has none" if not row.learns else "trains one" if row.name in fitting
                   else f"trains a {ENCODERS[row.encoder].kind} encoder, which {feature_spec.name} cannot read")
            raise OrgasegError(f"{feature_spec.name} features need a trained encoder: pass {arg('model')}, a checkpoint of "
                               f"{' / '.join(fitting)} ('orgaseg train'); method {row.name!r} {own}")

        device_name = resolve_device(device).type
        encoder = load_encoder(model, device_name)
        trained = encoder.record.get("method")
        # by the checkpoint's method, not only its encoder: his4mae and sdae-recon train the same one
        if row.encoder is not None and (encoder.name != row.encoder or trained not in (None, row.name)):
            raise OrgasegError(f"{model} is a checkpoint of {trained}, not {row.name}: pass {arg('method', trained)}")
        if encoder.kind != feature_spec.needs:
            raise OrgasegError(f"{feature_spec.name} features need a {feature_spec.needs} encoder; {model} holds a "
                               f"{encoder.kind} encoder")
        pixel_size_nm = resolve_pixel_size(pixel_size, encoder.pixel_size_nm)
        if pixel_size is not None and pixel_size_nm != encoder.pixel_size_nm:
            trained = "the training volumes' own pixel size" if encoder.pixel_size_nm is None else f"{encoder.pixel_size_nm:g} nm"
            warnings.warn(OrgasegWarning(f"{model} was trained at {trained}; segmenting at "
                                         f"{'native' if pixel_size_nm is None else f'{pixel_size_nm:g} nm'} shows it "
                                         "other structures than it learned"), stacklevel=2)
    else:
        if model is not None:  # it would be hashed into the provenance, yet read by nothing
            trained = _trained_method(model)
            if trained is not None and trained != row.name:
                reading = [name for name, spec in FEATURES.items()
                           if spec.needs is not None and spec.needs == _encoder_kind(trained)]
                clustering = (f", or keep method {row.name!r} and pass {arg('features')} with features that read its "
                              f"encoder ({', '.join(reading)})") if reading and not row.learns else ""
                raise OrgasegError(f"{model} is a checkpoint of {trained}, and method {row.name!r} with "
                                   f"{feature_spec.name} features reads no encoder: pass {arg('method', trained)}"
                                   f"{clustering}")
            reading = ", ".join(name for name, spec in FEATURES.items() if spec.needs is not None)
            raise OrgasegError(f"{model}: {feature_spec.name} features read no encoder, so the checkpoint would be "
                               f"ignored; pass {arg('features')} with features that read one ({reading}), or leave "
                               "it out")
        pixel_size_nm = resolve_pixel_size(pixel_size, row.pixel_size_nm)
    return Stages(method=row, features=feature_spec, clusterer=clusterer_spec, feature_options=feature_options,
                  clusterer_options=clusterer_options, encoder=encoder, pixel_size_nm=pixel_size_nm,
                  device=device_name, checkpoint=None if model is None else str(model),
                  coarsen_only=pixel_size is None and encoder is None)


def _encoder_kind(method: str) -> str:
    """The kind of encoder a learning method trains (what reads its tokens)."""
    from orgaseg.models.encoder import ENCODERS

    return ENCODERS[METHODS[method].encoder].kind


def _trained_method(model) -> str | None:
    """The method whose encoder checkpoint ``model`` is (None when it is not a readable one)."""
    from orgaseg.models.checkpoint import load_checkpoint

    try:
        method = load_checkpoint(model).get("method")
    except (OrgasegError, OSError):
        return None
    return method if method in METHODS and METHODS[method].learns else None
