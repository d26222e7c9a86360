"""The method table: every method is a named preset of the three stages, written as data.

A row says which encoder the method trains (none for the filter-bank
baseline), which dense features and clusterer it uses with which options,
its working pixel size, and its training presets. ``orgaseg methods`` prints
the table; ``segment`` and ``benchmark`` take ``--features``, ``--clusterer``
and ``--option NAME=VALUE`` to override any stage, so combinations the papers
did not try are one option away.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from orgaseg.errors import OrgasegError
from orgaseg.methods import graph_method, han_vae, his4mae, maester
from orgaseg.options import check_whole_number, lookup


def thousandth_sample(n_voxels: int, floor: int = 20_000, cap: int = 1_000_000) -> int:
    """A thousandth of the voxels, at least ``floor`` and at most ``cap`` (HiS4MAE's fixed-centre sample)."""
    return int(min(cap, max(floor, n_voxels // 1000)))


@dataclass(frozen=True)
class Method:
    """A segmentation method: encoder + dense features + clusterer, with defaults.

    Attributes
    ----------
    name : str
        ``--method NAME``.
    summary : str
        One line for ``orgaseg methods`` and the README.
    encoder : str or None
        Row of :data:`orgaseg.models.encoder.ENCODERS` it trains; None for no learned encoder.
    features : str
        Default dense features (:data:`orgaseg.features.FEATURES`).
    clusterer : str
        Default clusterer (:data:`orgaseg.cluster.CLUSTERERS`).
    options : mapping
        Default stage options (overridden by ``--option``).
    pixel_size_nm : float or None
        Default working pixel size in nm for training and segmentation (None: the input's own).
    train_presets : mapping of str to TrainConfig
        Optimisation per preset (empty for methods that do not learn; sccs and cs2c: training steps per preset).
    make_model : callable, optional
        ``make_model(config, preset, saved) -> (model, record)`` for training (see
        :func:`orgaseg.methods.vit_method.train_vit`).
    trainer : callable, optional
        ``trainer(method, inputs, output, **options) -> record``: how the method trains
        (default :func:`orgaseg.methods.vit_method.train_vit`, the ViT loop). A method without an
        encoder but with a trainer trains its clusterer (sccs, cs2c).
    sample_size : callable, optional
        ``sample_size(n_voxels)``: voxels sampled to fit the clusterer; None: the clusterer's default.
    paper : str
        The publication it implements.
    """

    name: str
    summary: str
    encoder: str | None
    features: str
    clusterer: str = "kmeans"
    options: Mapping[str, Any] = field(default_factory=dict)
    pixel_size_nm: float | None = None
    train_presets: Mapping[str, Any] = field(default_factory=dict)
    make_model: Callable[..., Any] | None = None
    sample_size: Callable[[int], int] | None = None
    paper: str = ""
    trainer: Callable[..., dict] | None = None

    @property
    def learns(self) -> bool:
        """Whether the method needs a trained checkpoint (``orgaseg train``)."""
        return self.encoder is not None

    @property
    def trains(self) -> bool:
        """Whether ``orgaseg train`` has something to train: an encoder, or a clusterer with a trainer (sccs, cs2c)."""
        return self.learns or self.trainer is not None

    @property
    def presets(self) -> tuple[str, ...]:
        return tuple(self.train_presets)

    def train(self, inputs, output, **options) -> dict:
        """Train this method's model; see :func:`orgaseg.methods.vit_method.train_vit` for the options."""
        if not self.trains:
            raise OrgasegError(f"method {self.name!r} does not learn: there is nothing to train")
        _check_training_arguments(options)
        if isinstance(inputs, (str, os.PathLike)) or hasattr(inputs, "shape"):
            inputs = [inputs]  # one volume (a path, a Volume, an array), not its characters or its sections
        if self.trainer is not None:
            return self.trainer(self, inputs, output, **options)
        from orgaseg.methods.vit_method import train_vit

        return train_vit(self, inputs, output, **options)



def _check_training_arguments(options: dict) -> None:
    """The counts and budgets every trainer takes, checked before any work (CLI and Python alike)."""
    for name, minimum in (("steps", 1), ("snapshots", 0), ("k", 1), ("graphs", 1)):
        value = options.get(name)
        if value is None:
            continue
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
            raise OrgasegError(f"{'K' if name == 'k' else name} must be a whole number >= {minimum}, got {value!r}")
    if options.get("seed") is not None:
        options["seed"] = check_whole_number(options["seed"], "seed")
    minutes = options.get("minutes")
    if minutes is not None and not (isinstance(minutes, numbers.Real) and 0 < minutes < math.inf):
        raise OrgasegError(f"minutes must be a positive number, got {minutes!r}")


#: The methods, by name. A new method is one row here.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # 10 nm: on vnc (4.6 nm) and cdeep3m-mito (5.9 nm) the filter bank scores as at the native pixel
        # size within 0.01-0.02 Dice at 9.2 and 11.8 nm on a quarter of the pixels (docs/pixel-size.md)
        Method("baseline", "classical floor: multi-scale filter bank at scales in nm + k-means",
               encoder=None, features="filter-bank", pixel_size_nm=10.0, paper="-"),
        # the graph clusterers fit on the volume they segment, like k-means, or train once on other volumes
        # ('orgaseg train --method sccs', K as the papers); any encoder's features via --model (train: --encoder)
        Method("sccs", "SCCS: SLIC superpixel graphs, neural spectral embedding + clustering head; filter-bank "
               "features unless --model/--features say otherwise", encoder=None, features="filter-bank",
               clusterer="sccs", pixel_size_nm=10.0, train_presets=graph_method.TRAIN_PRESETS,
               trainer=functools.partial(graph_method.train_graph_clusterer, default_k=8),
               paper="Jiang, Sun, Wang, Pei (SCCS)"),
        Method("cs2c", "CS²C: SCCS's spectral branch with a spatial (DEC) branch; --clusterer cs2c-spa for the "
               "spatial assignment", encoder=None, features="filter-bank", clusterer="cs2c", pixel_size_nm=10.0,
               train_presets=graph_method.TRAIN_PRESETS,
               trainer=functools.partial(graph_method.train_graph_clusterer, default_k=14),
               paper="Jiang & Pei (CS²C)"),
        Method("maester", "ViT masked autoencoder on 5 px patches in 80 px fields of view; cover-and-stride + k-means",
               encoder="mae", features="cover-stride", train_presets=maester.TRAIN_PRESETS,
               make_model=maester.make_model, paper="Xie et al., CVPR 2023"),
        Method("his4mae", "self-distilled masked autoencoder with a 512-code codebook; expand-stride + k-means",
               encoder="distilled-mae", features="expand-stride", train_presets=his4mae.TRAIN_PRESETS,
               make_model=functools.partial(his4mae.make_model, codebook_size=512), sample_size=thousandth_sample,
               paper="HiS4MAE (ICLR 2025 submission)"),
        Method("sdae-recon", "HiS4MAE's ablation without the codebook (student aligned to the EMA teacher's tokens)",
               encoder="distilled-mae", features="expand-stride", train_presets=his4mae.TRAIN_PRESETS,
               make_model=functools.partial(his4mae.make_model, codebook_size=0), sample_size=thousandth_sample,
               paper="HiS4MAE ablation"),
        # 16 nm: the paper bins BetaSeg to 16 nm; per-voxel inference is the cost, so the grid stays coarse
        Method("han-vae", "3D conv VAE of 16^3 patches, metric-learned semantic latents; voxel latents + MiniBatch k-means",
               encoder="patch-vae-3d", features="voxel-latents", clusterer="minibatch-kmeans", pixel_size_nm=16.0,
               train_presets=han_vae.TRAIN_PRESETS, make_model=han_vae.make_model, trainer=han_vae.train_3d,
               paper="Han et al., CVPRW 2022"),
        Method("han-vae-2d", "Han et al.'s VAE in 2D (16^2 patches per section); voxel latents + MiniBatch k-means",
               encoder="patch-vae-2d", features="voxel-latents-2d", clusterer="minibatch-kmeans", pixel_size_nm=16.0,
               train_presets=han_vae.TRAIN_PRESETS, make_model=han_vae.make_model, trainer=han_vae.train_2d,
               paper="Han et al., CVPRW 2022 (2D variant)"),
    )
}


def get_method(name: str | Method) -> Method:
    """The method called ``name`` (a Method is returned unchanged); a clear error listing the known ones."""
    return name if isinstance(name, Method) else lookup(METHODS, name, "method")


def method_names() -> list[str]:
    return list(METHODS)


def train(method: str | Method, inputs, output, **options) -> dict:
    """Train ``method``'s encoder (or the ``sccs`` / ``cs2c`` clusterer) on ``inputs``; write a checkpoint.

    Parameters
    ----------
    method : str or Method
        A method that learns (``orgaseg methods``): ``maester``, ``his4mae``,
        ``sdae-recon``, ``han-vae``, ``han-vae-2d``, ``sccs`` or ``cs2c``.
    inputs : str, Path, Volume, ndarray, or a sequence of them
        The training volume(s): paths (any format :func:`orgaseg.open_volume`
        reads), volumes or 2D/3D arrays. One path or array is one volume.
    output : str or Path
        The checkpoint to write (``.pt``; ``.json`` for ``sccs`` and ``cs2c``).
    **options
        Keyword arguments of the method's trainer:
        :func:`~orgaseg.methods.vit_method.train_vit` (``maester``, ``his4mae``,
        ``sdae-recon``), :func:`~orgaseg.methods.han_vae.train_han_vae`
        (``han-vae``, ``han-vae-2d``) and
        :func:`~orgaseg.methods.graph_method.train_graph_clusterer` (``sccs``,
        ``cs2c``, which also take ``k``, ``encoder``, ``features`` and
        ``graphs``). All take ``preset``, ``steps``, ``minutes``, ``resume``,
        ``overwrite``, ``device``, ``seed``, ``workers``, ``snapshots``,
        ``model_options``, ``pixel_size`` (working pixel size in nm, or
        ``"native"``), ``voxel_size`` (``(z, y, x)`` in nm, overriding the
        inputs' metadata), ``key`` and ``progress``.

    Returns
    -------
    dict
        The final checkpoint record (``step``, ``preset``, ``training_volumes``, ...).

    Raises
    ------
    OrgasegError
        A method that does not learn, ``steps``, ``snapshots``, ``k`` or ``seed`` that is
        not a whole number in range, ``minutes`` that is not positive, and the
        trainer's own checks (no input, an input it cannot read, a resume that
        does not match the checkpoint, an existing output without ``overwrite``).
    TypeError
        An option the method's trainer does not take.
    """
    return get_method(method).train(inputs, output, **options)
