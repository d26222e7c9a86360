"""Named methods: each is a preset of an encoder, a dense-feature strategy and a clusterer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from orgaseg.errors import OrgasegError


@dataclass(frozen=True)
class Method:
    """A segmentation method.

    Attributes
    ----------
    name : str
        The name used on the command line (``--method``).
    summary : str
        One line for ``--help`` and the README.
    learns : bool
        Whether the method needs a trained checkpoint (``orgaseg train``).
    build_features : callable
        ``build_features(volume, checkpoint, options, device)`` returns a
        feature extractor (see :class:`orgaseg.pipeline.runner.FeatureExtractor`).
    presets : tuple of str
        Training presets (empty for methods that do not learn).
    train : callable, optional
        ``train(inputs, output, *, preset, steps, minutes, resume, overwrite,
        device, seed, workers, snapshots, voxel_size, key, progress)`` for
        methods that learn.
    sample_size : callable
        ``sample_size(n_voxels)``: voxels sampled to fit the clusterer when
        the user does not say (default: 200,000 whatever the volume).
    """

    name: str
    summary: str
    learns: bool
    build_features: Callable[..., Any]
    presets: tuple[str, ...] = field(default=())
    train: Callable[..., Any] | None = None
    sample_size: Callable[[int], int] = field(default=lambda n_voxels: DEFAULT_SAMPLE_SIZE)


#: Voxels sampled to fit k-means unless a method or the user says otherwise.
DEFAULT_SAMPLE_SIZE = 200_000


def thousandth_sample(n_voxels: int, floor: int = 20_000, cap: int = 1_000_000) -> int:
    """A thousandth of the voxels, at least ``floor`` and at most ``cap`` (HiS4MAE's fixed-centre sample)."""
    return int(min(cap, max(floor, n_voxels // 1000)))


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (later issues add learned methods here)."""
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method called ``name``; a clear error listing the known ones otherwise."""
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise OrgasegError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}") from None


def method_names() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)


def _load_builtin() -> None:
    # importing a method's module registers it
    from orgaseg.methods import baseline, his4mae, maester  # noqa: F401
