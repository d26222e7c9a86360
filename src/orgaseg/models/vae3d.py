"""Han et al.'s convolutional VAE of small patches, with multi-similarity metric learning on a latent subspace.

Han, Dmitrieva, Sauer, Tam, Rittscher, "Self-Supervised Voxel-Level
Representation Rediscovers Subcellular Structures in Volume Electron
Microscopy" (CVPRW 2022). A patch of ``16^3`` voxels (``16^2`` pixels in the
2D variant) centred on a voxel is encoded to a Gaussian posterior over a
64-D latent; the mean of its first 8 dimensions (the *semantic subspace*) is
trained to be invariant to small shifts, rotations and elastic jitter of the
patch by a multi-similarity loss between an anchor patch and its transformed
copies. The latent mean is the voxel's representation.

Architecture (:data:`MODEL_PRESETS` ``"paper"``)
--------------------------------------------------
Encoder: 3 x [Conv k3 (padding 1) -> MaxPool 2 -> ReLU] with channels
1 -> 128 -> 256 -> 512 (16 -> 8 -> 4 -> 2 voxels per side), flatten
(512 x 2^3 = 4096), Linear -> 256 + ReLU, then two linear heads to the latent
mean and standard deviation (softplus + 1e-5). Decoder, mirrored: Linear
64 -> 256 + ReLU -> 4096 + ReLU, 3 x [nearest upsampling x2 -> Conv k3] with
channels 512 -> 256 -> 128 -> 2 (ReLU between), the two output channels the
mean and standard deviation (softplus + 1e-5) of a Gaussian likelihood per
voxel.

Loss::

    loss = NLL(x | decoder(z)) + kl_weight * KL(q(z | x) || N(0, I)) + metric_weight * MS(semantic means)

with the KL summed over the latent dimensions (one closed-form term per
dimension, see :func:`kl_per_dimension`). ``nll_reduction`` says how the
rest is reduced: ``"sum"`` (the ``cpu`` and ``tiny`` presets) sums the NLL
over the patch's voxels and averages both terms over the patches;
``"mean"`` (the ``paper`` preset, as the reference code hanhongqing/pvae
``unsup_seg_vae/objectives.py`` and ``pvae/main_BetaSeg.py`` compute it)
averages the NLL over the patch's voxels and sums both terms over a row's
anchor and positives, averaged over the rows. The weights 1e-3 and 1e3 were
set for the latter: summed over 16^3 voxels, the NLL outweighs the metric
loss about 800 times more (50 times over 16^2 pixels). ``MS`` is the multi-similarity loss (Wang et al.,
CVPR 2019) on the semantic means (:func:`multi_similarity_loss`), computed
for all pairs of the batch at once, on cosine similarities
(``ms_distance="cosine"``, the ``cpu`` and ``tiny`` presets) or, as the
reference code, on Euclidean distances (``"euclidean"``, the ``paper`` preset).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from orgaseg.errors import OrgasegError

#: The smallest standard deviation the heads give (softplus + this).
MIN_STD = 1e-5


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and loss weights of a :class:`PatchVAE` (defaults: the paper's, but for the loss's reductions).

    Attributes
    ----------
    ndim : int
        3 (Conv3d on ``16^3`` patches) or 2 (Conv2d on ``16^2`` patches).
    patch : int
        Patch side in samples; three poolings by 2 take it to ``patch / 8``.
    channels : tuple of int
        Encoder channels after each of the three convolutions (decoder mirrored).
    hidden : int
        Width of the fully connected layer between the convolutions and the latent.
    latent : int
        Latent dimensions.
    semantic : int
        The first ``semantic`` latent dimensions carry the metric loss.
    kl_weight, metric_weight : float
        Weights of the KL term and of the multi-similarity loss.
    ms_alpha, ms_beta, ms_margin : float
        Multi-similarity scales of positive and negative pairs and the margin.
    nll_reduction : str
        ``"sum"``: the NLL summed over a patch's samples, the terms averaged over the patches; ``"mean"`` (the
        reference code's): the NLL averaged over a patch's samples, the terms summed over a row's anchor and
        positives and averaged over the rows.
    ms_distance : str
        ``"cosine"``: the multi-similarity loss on cosine similarities; ``"euclidean"`` (the reference code's):
        on Euclidean distances.
    """

    ndim: int = 3
    patch: int = 16
    channels: tuple[int, int, int] = (128, 256, 512)
    hidden: int = 256
    latent: int = 64
    semantic: int = 8
    kl_weight: float = 1e-3
    metric_weight: float = 1e3
    ms_alpha: float = 1.0
    ms_beta: float = 1.0
    ms_margin: float = 1.0
    nll_reduction: str = "sum"
    ms_distance: str = "cosine"

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise OrgasegError(f"the patch VAE is 2D or 3D, got ndim {self.ndim}")
        if self.patch < 8 or self.patch % 8:
            raise OrgasegError(f"the patch side must be a positive multiple of 8 (three poolings by 2), got {self.patch}")
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise OrgasegError(f"channels must be three positive widths, got {self.channels}")
        if not 1 <= self.semantic <= self.latent:
            raise OrgasegError(f"the semantic subspace ({self.semantic}) must fit in the latent ({self.latent})")
        if self.nll_reduction not in ("sum", "mean"):
            raise OrgasegError(f"nll_reduction is sum or mean, got {self.nll_reduction!r}")
        if self.ms_distance not in ("cosine", "euclidean"):
            raise OrgasegError(f"ms_distance is cosine or euclidean, got {self.ms_distance!r}")

    @property
    def bottleneck(self) -> int:
        """Values after the convolutions: last channels x ``(patch / 8)^ndim``."""
        return self.channels[-1] * (self.patch // 8) ** self.ndim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise OrgasegError(f"unknown patch-VAE config fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


#: Model sizes per training preset, for the 3D variant (the 2D variant: ``ndim=2``, same widths).
MODEL_PRESETS: dict[str, VAEConfig] = {
    # the reference code's loss (hanhongqing/pvae unsup_seg_vae/objectives.py)
    "paper": VAEConfig(nll_reduction="mean", ms_distance="euclidean"),
    # 1/8 of the paper's widths: ~25 MFLOP per 3D patch instead of ~1.4 GFLOP, so per-voxel
    # inference of a few million voxels fits in minutes on one CPU thread
    "cpu": VAEConfig(channels=(16, 32, 64), hidden=128),
    "tiny": VAEConfig(channels=(4, 8, 8), hidden=32, latent=16),
}


def model_preset(preset: str, ndim: int = 3) -> VAEConfig:
    """The :data:`MODEL_PRESETS` entry for ``preset`` in ``ndim`` dimensions."""
    if preset not in MODEL_PRESETS:
        raise OrgasegError(f"unknown patch-VAE preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return dataclasses.replace(MODEL_PRESETS[preset], ndim=ndim)


def standardize_patches(patches: torch.Tensor) -> torch.Tensor:
    """Each patch (first axis) to zero mean and unit variance (flat patches: divided by at least 1e-3)."""
    axes = tuple(range(1, patches.ndim))
    mean = patches.mean(dim=axes, keepdim=True)
    std = patches.std(dim=axes, keepdim=True, unbiased=False).clamp_min(1e-3)
    return (patches - mean) / std


def kl_per_dimension(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, std^2) || N(0, 1))`` of every latent dimension: ``(batch, latent)``.

    ``0.5 (mean^2 + std^2 - 1) - log std`` per dimension; a sample's KL is the
    sum over its dimensions.
    """
    return 0.5 * (mean.square() + std.square() - 1.0) - torch.log(std)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Negative log-likelihood of ``x`` under independent Gaussians, summed (or averaged) per sample: ``(batch,)``."""
    per_voxel = torch.log(std) + 0.5 * ((x - mean) / std).square() + 0.5 * math.log(2.0 * math.pi)
    per_voxel = per_voxel.flatten(1)
    return per_voxel.mean(1) if reduction == "mean" else per_voxel.sum(1)


def multi_similarity_loss(embeddings: torch.Tensor, labels: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
                          margin: float = 1.0, distance: str = "cosine") -> torch.Tensor:
    """Multi-similarity loss (Wang et al., CVPR 2019) over all pairs of a batch, without loops.

    For each embedding ``i`` with positives ``P_i`` (same label) and negatives
    ``N_i``, on cosine similarities ``S``::

        1/alpha log(1 + sum_{P_i} exp(-alpha (S_ik - margin))) + 1/beta log(1 + sum_{N_i} exp(beta (S_ik - margin)))

    or, with ``distance="euclidean"`` (Han et al.'s reference code), on Euclidean distances ``D``, positives
    pulled within ``margin`` and negatives pushed beyond it::

        1/alpha log(1 + sum_{P_i} exp(alpha (D_ik - margin))) + 1/beta log(1 + sum_{N_i} exp(-beta (D_ik - margin)))

    averaged over the embeddings that have at least one positive or negative.

    Parameters
    ----------
    embeddings : Tensor, shape (n, d)
    labels : Tensor, shape (n,)
        Equal labels mark positive pairs.
    distance : str
        ``"cosine"`` or ``"euclidean"``.
    """
    if distance == "euclidean":
        squared = (embeddings[:, None, :] - embeddings[None, :, :]).square().sum(-1)
        similarity = -squared.clamp_min(1e-12).sqrt()  # the distance's gradient is finite at coinciding points
        margin = -margin
    else:
        unit = F.normalize(embeddings, dim=1)
        similarity = unit @ unit.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    # log(1 + sum exp(v)) over a mask = logsumexp over [0, v_masked]; masked entries are -inf
    def soft_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = values.masked_fill(~mask, float("-inf"))
        zero = torch.zeros(len(values), 1, dtype=values.dtype, device=values.device)
        return torch.logsumexp(torch.cat([zero, masked], dim=1), dim=1)

    pos = soft_sum(-alpha * (similarity - margin), positive) / alpha
    neg = soft_sum(beta * (similarity - margin), negative) / beta
    counted = positive.any(1) | negative.any(1)
    return (pos + neg)[counted].mean() if counted.any() else similarity.sum() * 0.0


def _blocks(ndim: int):
    conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    pool = nn.MaxPool3d if ndim == 3 else nn.MaxPool2d
    return conv, pool


class PatchVAE(nn.Module):
    """The VAE of a :class:`VAEConfig`: ``encode`` a batch of patches, ``forward`` for the training loss.

    Patches are ``(B, 1, p, p, p)`` (3D) or ``(B, 1, p, p)`` (2D), standardised per patch.
    Training batches are ``(B, 1 + n_positives, 1, p, ...)``: an anchor and its
    transformed copies per row (see :mod:`orgaseg.methods.han_vae`).
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        conv, pool = _blocks(config.ndim)
        c1, c2, c3 = config.channels
        widths = (1, c1, c2, c3)
        self.features = nn.Sequential(*[layer for a, b in zip(widths, widths[1:])
                                        for layer in (conv(a, b, 3, padding=1), pool(2), nn.ReLU())])
        self.hidden = nn.Sequential(nn.Linear(config.bottleneck, config.hidden), nn.ReLU())
        self.mean_head = nn.Linear(config.hidden, config.latent)
        self.std_head = nn.Linear(config.hidden, config.latent)
        self.expand = nn.Sequential(nn.Linear(config.latent, config.hidden), nn.ReLU(),
                                    nn.Linear(config.hidden, config.bottleneck), nn.ReLU())
        up = (c3, c2, c1, 2)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(up, up[1:])):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv(a, b, 3, padding=1)]
            if i < 2:
                layers.append(nn.ReLU())
        self.reconstruct = nn.Sequential(*layers)
        self._terms: dict[str, float] = {}

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, patches: torch.Tensor) -> None:
        c = self.config
        expected = (1,) + (c.patch,) * c.ndim
        if patches.ndim != c.ndim + 2 or tuple(patches.shape[1:]) != expected:
            raise OrgasegError(f"the patch VAE takes patches (batch, {', '.join(map(str, expected))}), "
                               f"got {tuple(patches.shape)}")

    def posterior(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and standard deviation ``(B, latent)`` each."""
        self._check(patches)
        hidden = self.hidden(self.features(patches).flatten(1))
        return self.mean_head(hidden), F.softplus(self.std_head(hidden)) + MIN_STD

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        """The latent means ``(B, latent)``: the voxel representation (mean head only)."""
        self._check(patches)
        return self.mean_head(self.hidden(self.features(patches).flatten(1)))

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian mean and standard deviation of every voxel of the patch, each ``(B, 1, p, ...)``."""
        c = self.config
        side = c.patch // 8
        grid = self.expand(latent).view(len(latent), c.channels[-1], *(side,) * c.ndim)
        out = self.reconstruct(grid)
        return out[:, :1], F.softplus(out[:, 1:]) + MIN_STD

    def losses(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of a training batch ``(B, 1 + P, 1, p, ...)``, each averaged over its patches."""
        c = self.config
        if batch.ndim != c.ndim + 3:
            raise OrgasegError(f"a training batch is (rows, 1 + positives, 1, patch...), got {tuple(batch.shape)}")
        rows, group = batch.shape[:2]
        patches = batch.flatten(0, 1)
        mean, std = self.posterior(patches)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        recon_mean, recon_std = self.decode(mean + std * noise)
        labels = torch.arange(rows, device=batch.device).repeat_interleave(group)
        per_row = group if c.nll_reduction == "mean" else 1  # "mean": summed over a row's patches
        return {
            "nll": gaussian_nll(patches, recon_mean, recon_std, c.nll_reduction).mean() * per_row,
            "kl": kl_per_dimension(mean, std).sum(1).mean() * per_row,
            "ms": multi_similarity_loss(mean[:, : c.semantic], labels, alpha=c.ms_alpha, beta=c.ms_beta,
                                        margin=c.ms_margin, distance=c.ms_distance),
        }

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        terms = self.losses(batch, generator)
        c = self.config
        loss = terms["nll"] + c.kl_weight * terms["kl"] + c.metric_weight * terms["ms"]
        self._terms = {name: round(float(value.detach()), 4) for name, value in terms.items()}
        return loss, terms

    def progress_figures(self) -> dict[str, float]:
        """The last batch's loss terms, for the progress bar."""
        return dict(self._terms)


@dataclass
class VoxelLatentEncoder:
    """A trained patch VAE as the dense-feature stage sees it: patches in, latent means out.

    Attributes
    ----------
    model : PatchVAE
        In evaluation mode on its device.
    name : str
        The encoder's row in :data:`orgaseg.models.encoder.ENCODERS`.
    kind : str
        ``"voxels-3d"`` or ``"voxels-2d"``.
    n_features : int
        Latent dimensions.
    semantic : int
        Leading dimensions of the semantic subspace.
    patch : int
        Patch side in samples.
    ndim : int
        2 or 3.
    radius : float
        Default patch half-extent at inference, in working pixels (the middle of training's range).
    pixel_size_nm : float or None
        Working pixel size it was trained at.
    record : dict
        The checkpoint record without weights.
    """

    model: PatchVAE
    name: str
    kind: str
    n_features: int
    semantic: int
    patch: int
    ndim: int
    radius: float
    pixel_size_nm: float | None = None
    record: dict = dataclasses.field(default_factory=dict, repr=False)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        return self.model.encode(patches)

    def describe(self) -> dict:
        return {"encoder": self.name, "kind": self.kind, "patch": self.patch, "ndim": self.ndim,
                "n_features": self.n_features, "semantic": self.semantic, "radius": self.radius,
                "pixel_size_nm": self.pixel_size_nm, "method": self.record.get("method"),
                "preset": self.record.get("preset")}


def build_model(record: dict) -> PatchVAE:
    """The untrained :class:`PatchVAE` of a checkpoint record."""
    return PatchVAE(VAEConfig.from_dict(record["model_config"]))


def make_encoder(model: PatchVAE, name: str, kind: str, pixel_size_nm: float | None, record: dict) -> VoxelLatentEncoder:
    """Wrap a loaded :class:`PatchVAE` as an :class:`~orgaseg.models.encoder.Encoder` (see ``load_encoder``)."""
    config = model.config
    expected = "voxels-3d" if config.ndim == 3 else "voxels-2d"
    if kind != expected:
        raise OrgasegError(f"the checkpoint's {config.ndim}D patch VAE does not match encoder kind {kind!r}")
    radius = float(record.get("sampling", {}).get("inference_radius", 4.0))
    return VoxelLatentEncoder(model=model, name=name, kind=kind, n_features=config.latent, semantic=config.semantic,
                              patch=config.patch, ndim=config.ndim, radius=radius, pixel_size_nm=pixel_size_nm,
                              record=record)
