"""The encoder stage: a trained model as the dense-feature strategies see it, and the table of encoders.

An :class:`Encoder` is loaded from a checkpoint and says what it maps
(``kind``), how wide its features are and at which working pixel size it was
trained. Today every encoder is a 2D token encoder (``kind = "tokens-2d"``:
fields of view ``(B, 1, F, F)`` to token grids ``(B, F/P, F/P, D)``), which
every token-to-pixel strategy of :mod:`orgaseg.features` accepts. A new
encoder is one module plus one row of :data:`ENCODERS`: a builder that
rebuilds the model from a checkpoint record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from orgaseg.errors import OrgasegError


class Encoder(Protocol):
    """A trained encoder, ready for inference."""

    #: What it maps, i.e. which dense-feature strategies fit it (``"tokens-2d"``).
    kind: str
    #: Feature channels per token.
    n_features: int
    #: The working pixel size (nm) it was trained at; None: the training volumes' own.
    pixel_size_nm: float | None

    def encode(self, batch):
        """Inference on a batch (under :func:`torch.inference_mode`)."""
        ...

    def describe(self) -> dict:
        """JSON-serialisable identity (provenance)."""
        ...


@dataclass
class TokenEncoder:
    """A 2D token encoder: fields of view ``(B, 1, fov, fov)`` -> tokens ``(B, fov/patch, fov/patch, D)``.

    Attributes
    ----------
    model : torch.nn.Module
        Has ``encode(fovs) -> tokens``; in evaluation mode on its device.
    name : str
        The encoder's row in :data:`ENCODERS`.
    fov, patch, n_features : int
        Field of view and patch in pixels, token width.
    pixel_size_nm : float or None
        Working pixel size it was trained at.
    record : dict
        The checkpoint record (without weights).
    """

    model: Any
    name: str
    fov: int
    patch: int
    n_features: int
    pixel_size_nm: float | None = None
    record: dict = field(default_factory=dict, repr=False)
    kind: str = "tokens-2d"

    def encode(self, fovs):
        return self.model.encode(fovs)

    def describe(self) -> dict:
        return {"encoder": self.name, "kind": self.kind, "fov": self.fov, "patch": self.patch,
                "n_features": self.n_features, "pixel_size_nm": self.pixel_size_nm,
                "method": self.record.get("method"), "preset": self.record.get("preset")}


def _build_mae(record: dict):
    from orgaseg.models.mae import MAEConfig, MaskedAutoencoder

    return MaskedAutoencoder(MAEConfig.from_dict(record["model_config"]))


def _build_distilled_mae(record: dict):
    from orgaseg.models.distill import DistillConfig, DistilledMAE
    from orgaseg.models.mae import MAEConfig

    return DistilledMAE(MAEConfig.from_dict(record["model_config"]), DistillConfig.from_dict(record["distill_config"]))


def _build_patch_vae(record: dict):
    from orgaseg.models.vae3d import build_model

    return build_model(record)


def _make_voxel_encoder(*args):
    from orgaseg.models.vae3d import make_encoder

    return make_encoder(*args)


@dataclass(frozen=True)
class EncoderSpec:
    """A row of the encoder table.

    Attributes
    ----------
    name : str
        Stored in checkpoints (``"encoder"``).
    summary : str
        One line for ``orgaseg methods``.
    kind : str
        What the encoder maps (see :class:`Encoder`).
    build_model : callable
        ``build_model(record) -> torch.nn.Module``: the untrained model of a checkpoint record's configuration.
    make_encoder : callable, optional
        ``make_encoder(model, name, kind, pixel_size_nm, record) -> Encoder``: wraps the loaded model
        (default: a :class:`TokenEncoder` from the ViT config keys).
    """

    name: str
    summary: str
    kind: str
    build_model: Callable[[dict], Any]
    make_encoder: Callable[..., Any] | None = None


#: The encoders, by the name checkpoints record.
ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec("mae", "ViT masked autoencoder (MAESTER): 5 px patches in 80 px fields of view",
                    "tokens-2d", _build_mae),
        EncoderSpec("distilled-mae", "masked autoencoder with an EMA teacher (+ codebook): the teacher's tokens",
                    "tokens-2d", _build_distilled_mae),
        EncoderSpec("patch-vae-3d", "3D convolutional VAE of 16^3 patches (Han et al.): per-voxel latent means",
                    "voxels-3d", _build_patch_vae, _make_voxel_encoder),
        EncoderSpec("patch-vae-2d", "2D convolutional VAE of 16^2 patches (Han et al., 2D variant): per-pixel latent means",
                    "voxels-2d", _build_patch_vae, _make_voxel_encoder),
    )
}

#: Checkpoints written before encoders were named record only their method.
_LEGACY_ENCODER = {"maester": "mae", "his4mae": "distilled-mae", "sdae-recon": "distilled-mae"}


def checkpoint_encoder(record: dict) -> EncoderSpec:
    """The encoder row of a checkpoint record."""
    name = record.get("encoder") or _LEGACY_ENCODER.get(str(record.get("method")))
    if name not in ENCODERS:
        raise OrgasegError(f"the checkpoint holds an unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[name]


def load_encoder(checkpoint: str | Path, device: str = "cpu") -> Encoder:
    """The trained encoder of a checkpoint, in evaluation mode on ``device``.

    Parameters
    ----------
    checkpoint : str or Path
        A checkpoint written by ``orgaseg train``.
    device : str
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    Encoder
        A :class:`TokenEncoder`, or what the encoder row's ``make_encoder`` makes.
    """
    from orgaseg.models.checkpoint import load_checkpoint
    from orgaseg.models.device import resolve_device

    record = load_checkpoint(checkpoint)
    spec = checkpoint_encoder(record)
    try:
        model = spec.build_model(record)
        model.load_state_dict(record["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, OrgasegError) as err:
        # an orgaseg checkpoint whose record was edited or cut short, or written by another version: torch's
        # state-dict messages run to a line per tensor, so a heading and its first line say what is wrong
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise OrgasegError(f"{checkpoint}: the checkpoint's {record.get('method')} model cannot be rebuilt from its "
                           f"record ({type(err).__name__}: {' '.join(lines[:2])[:300]}); retrain it, or use the "
                           f"orgaseg version that wrote it ({record.get('package_version')})") from None
    model.to(resolve_device(device)).eval()
    config = record["model_config"]
    pixel_size = record.get("pixel_size_nm")
    info = {k: v for k, v in record.items() if k not in ("state_dict", "optimizer")}
    if spec.make_encoder is not None:
        return spec.make_encoder(model, spec.name, spec.kind, None if pixel_size is None else float(pixel_size), info)
    return TokenEncoder(model=model, name=spec.name, fov=int(config["img_size"]), patch=int(config["patch_size"]),
                        n_features=int(config["embed_dim"]), pixel_size_nm=None if pixel_size is None else float(pixel_size),
                        record=info, kind=spec.kind)
