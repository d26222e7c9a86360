"""Masked autoencoder on tiny patches (MAESTER, Xie et al., CVPR 2023).

A ViT encoder sees a random half of the 5x5-pixel patches of an 80x80-pixel
field of view; a light decoder fills learned mask tokens in at the hidden
positions and predicts their pixels. The loss is the mean squared error on
the masked patches only. After training, :meth:`MaskedAutoencoder.encode`
gives one token per patch without masking; clustering those tokens segments
organelles.

:class:`MAEConfig` holds every architectural choice and round-trips through a
plain dict, so a checkpoint rebuilds its model from ``config.to_dict()`` and
the weights alone. :data:`MODEL_PRESETS` names three sizes:

``paper``
    The published configuration (about 5.1M parameters).
``cpu``
    About 0.88M parameters (encoder 128 wide, 6 deep, 4 heads; decoder 64
    wide, 2 deep), meant to train to useful features in about 30 minutes on
    two CPU cores: a training step (forward, backward, AdamW) runs at about
    110 fields of view per second at batch 64 and mask 0.5 with two torch
    threads (about 180 at mask 0.75); the ``paper`` model runs at about 22.
``tiny``
    About 29k parameters, for tests and the demo.

The small presets predict per-patch normalised pixels (``norm_pix_loss``): on
the phantom, a briefly trained ``tiny`` model's tokens clustered better with
it (see the README's MAESTER section); ``paper`` keeps the paper's plain loss.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from orgaseg.errors import OrgasegError
from orgaseg.models.vit import LAYER_NORM_EPS, Block, ViTEncoder, init_weights, sincos_pos_embed_2d

#: Added to the patch variance before dividing by its square root in the normalised-pixel loss.
NORM_PIX_EPS = 1e-6


@dataclass(frozen=True)
class MAEConfig:
    """Architecture of a :class:`MaskedAutoencoder` (defaults: the MAESTER paper's).

    Attributes
    ----------
    img_size : int
        Field-of-view side in pixels (square), a multiple of ``patch_size``.
    patch_size : int
        Patch side in pixels; one token per patch.
    in_chans : int
        Image channels.
    embed_dim, depth, heads, mlp_ratio : int, int, int, float
        Encoder width, number of blocks, attention heads, MLP width ratio.
    decoder_dim, decoder_depth, decoder_heads, decoder_mlp_ratio : int, int, int, float
        The same for the decoder (``decoder_depth`` may be 0: a linear head).
    mask_ratio : float
        Share of patches hidden from the encoder during training, in (0, 1).
    pos_weight : float
        Factor on the encoder's sine-cosine position embedding (the decoder's is unscaled).
    norm_pix_loss : bool
        Predict each patch normalised to zero mean and unit variance.
    input_mean, input_std : float
        Fields of view enter the model as ``(x - input_mean) / input_std``
        (training sets them from the data, so inputs and targets have unit
        scale; a model fed [0, 1] intensities otherwise spends its capacity on
        the mean grey level).

    Raises
    ------
    OrgasegError
        On construction, if a value is of the wrong type or out of range, the
        field of view is not a multiple of the patch, or a width is not
        divisible by its heads and by 4.
    """

    img_size: int = 80
    patch_size: int = 5
    in_chans: int = 1
    embed_dim: int = 192
    depth: int = 14
    heads: int = 1
    mlp_ratio: float = 2.0
    decoder_dim: int = 128
    decoder_depth: int = 7
    decoder_heads: int = 8
    decoder_mlp_ratio: float = 2.0
    mask_ratio: float = 0.5
    pos_weight: float = 0.08
    norm_pix_loss: bool = False
    input_mean: float = 0.0
    input_std: float = 1.0

    def __post_init__(self) -> None:
        # Field types are the annotation strings (postponed evaluation).
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                    raise OrgasegError(f"model config: {field.name} must be an integer, got {value!r}")
                low = 0 if field.name == "decoder_depth" else 1
                if value < low:
                    raise OrgasegError(f"model config: {field.name} must be >= {low}, got {value}")
                object.__setattr__(self, field.name, int(value))
            elif field.type == "float":
                if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                    raise OrgasegError(f"model config: {field.name} must be a finite number, got {value!r}")
                object.__setattr__(self, field.name, float(value))
            elif not isinstance(value, bool):
                raise OrgasegError(f"model config: {field.name} must be true or false, got {value!r}")
        if self.img_size % self.patch_size:
            raise OrgasegError(
                f"model config: field of view {self.img_size} px is not a multiple of "
                f"the patch size {self.patch_size} px"
            )
        for part, dim, heads, ratio in (
            ("embed_dim", self.embed_dim, self.heads, "mlp_ratio"),
            ("decoder_dim", self.decoder_dim, self.decoder_heads, "decoder_mlp_ratio"),
        ):
            if dim % heads:
                raise OrgasegError(f"model config: {part} {dim} is not divisible by {heads} heads")
            if dim % 4:
                raise OrgasegError(f"model config: {part} {dim} is not divisible by 4 (2D sin-cos position embedding)")
            if getattr(self, ratio) <= 0:
                raise OrgasegError(f"model config: {ratio} must be > 0, got {getattr(self, ratio)}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise OrgasegError(f"model config: mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.input_std <= 0:
            raise OrgasegError(f"model config: input_std must be > 0, got {self.input_std}")
        if self.pos_weight < 0:
            raise OrgasegError(f"model config: pos_weight must be >= 0, got {self.pos_weight}")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid of a field of view, ``(rows, columns)``."""
        side = self.img_size // self.patch_size
        return side, side

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MAEConfig:
        """Rebuild a config from :meth:`to_dict` output.

        Missing fields take their defaults (so checkpoints written before a
        field was added still load); unknown fields are an error.

        Raises
        ------
        OrgasegError
            If ``data`` is not a mapping, has unknown fields, or holds invalid values.
        """
        if not isinstance(data, Mapping):
            raise OrgasegError(f"model config must be a mapping of field names to values, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OrgasegError(f"model config: unknown field(s) {', '.join(map(str, unknown))}")
        return cls(**data)

    def with_overrides(self, overrides: Mapping[str, Any]) -> MAEConfig:
        """This config with some architecture or loss fields replaced (an ablation of a preset).

        ``input_mean`` and ``input_std`` cannot be overridden: training measures them on the data.

        Raises
        ------
        OrgasegError
            If a name is not an overridable field or a value is invalid.
        """
        allowed = [field.name for field in dataclasses.fields(self) if field.name not in ("input_mean", "input_std")]
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise OrgasegError(f"model option(s) {', '.join(map(str, unknown))} unknown; "
                               f"choose among {', '.join(allowed)}")
        return dataclasses.replace(self, **overrides)


#: Named model sizes; see the module docstring.
MODEL_PRESETS: dict[str, MAEConfig] = {
    "paper": MAEConfig(),
    "cpu": MAEConfig(
        embed_dim=128, depth=6, heads=4, mlp_ratio=2.0,
        decoder_dim=64, decoder_depth=2, decoder_heads=4, decoder_mlp_ratio=2.0, norm_pix_loss=True,
    ),
    "tiny": MAEConfig(
        embed_dim=32, depth=2, heads=2, mlp_ratio=2.0,
        decoder_dim=32, decoder_depth=1, decoder_heads=2, decoder_mlp_ratio=2.0, norm_pix_loss=True,
    ),
}  # fmt: skip


class MaskedStep(NamedTuple):
    """Everything one masked forward pass computes (what self-distillation needs besides the loss)."""

    #: Scalar masked-patch MSE.
    loss: torch.Tensor
    #: Predicted patches ``(B, N, C*P*P)``.
    pred: torch.Tensor
    #: ``(B, N)``, 1 = masked.
    mask: torch.Tensor
    #: Encoder output of the visible tokens ``(B, n_keep, embed_dim)``, in the order of ``ids_keep``.
    latent: torch.Tensor
    #: ``(B, n_keep)`` grid indices of the visible tokens.
    ids_keep: torch.Tensor


def model_preset(name: str) -> MAEConfig:
    """The :data:`MODEL_PRESETS` entry called ``name``.

    Raises
    ------
    OrgasegError
        If there is no such preset (the message lists the known ones).
    """
    try:
        return MODEL_PRESETS[name]
    except (KeyError, TypeError):
        raise OrgasegError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}") from None


class MaskedAutoencoder(nn.Module):
    """ViT masked autoencoder predicting the pixels of masked patches.

    Parameters
    ----------
    config : MAEConfig
        Architecture; kept as ``self.config``.

    Notes
    -----
    Patches are flattened channel first, then row-major within the patch:
    element ``c * P * P + p * P + q`` of a patch is pixel ``(p, q)`` of channel ``c``.
    """

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        if not isinstance(config, MAEConfig):
            raise TypeError(f"MaskedAutoencoder needs an MAEConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.encoder = ViTEncoder(
            c.img_size, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.heads, c.mlp_ratio, c.pos_weight
        )
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        # The decoder's position embedding is unscaled: it must tell the mask
        # tokens apart, whatever the encoder's pos_weight.
        pos = sincos_pos_embed_2d(c.decoder_dim, *c.grid)
        self.register_buffer("decoder_pos_embed", pos.unsqueeze(0), persistent=False)
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_dim, c.decoder_heads, c.decoder_mlp_ratio) for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(c.decoder_dim, c.patch_size**2 * c.in_chans)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def n_tokens(self) -> int:
        """Tokens (patches) per field of view."""
        return self.encoder.n_tokens

    def n_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameter elements (buffers such as position embeddings excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- patches ---------------------------------------------------------------

    def _check_images(self, imgs: torch.Tensor) -> None:
        c = self.config
        expected = (c.in_chans, c.img_size, c.img_size)
        if not isinstance(imgs, torch.Tensor) or imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
            shape = tuple(imgs.shape) if isinstance(imgs, torch.Tensor) else type(imgs).__name__
            expected_text = ", ".join(map(str, expected))
            raise OrgasegError(f"model expects fields of view of shape (B, {expected_text}), got {shape}")

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """Split images ``(B, C, H, W)`` into flattened patches ``(B, N, C*P*P)``, row-major over the grid."""
        self._check_images(imgs)
        p, (gh, gw) = self.config.patch_size, self.config.grid
        x = imgs.reshape(imgs.shape[0], imgs.shape[1], gh, p, gw, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(imgs.shape[0], gh * gw, -1)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``(B, N, C*P*P)`` back to images ``(B, C, H, W)``."""
        c = self.config
        p, (gh, gw) = c.patch_size, c.grid
        if patches.ndim != 3 or tuple(patches.shape[1:]) != (gh * gw, c.in_chans * p * p):
            raise OrgasegError(
                f"expected patches of shape (B, {gh * gw}, {c.in_chans * p * p}), got {tuple(patches.shape)}"
            )
        x = patches.reshape(patches.shape[0], gh, gw, c.in_chans, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(patches.shape[0], c.in_chans, gh * p, gw * p)

    # -- masking, encoder, decoder ----------------------------------------------

    def random_masking(
        self,
        n_tokens: int,
        batch: int,
        mask_ratio: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Choose, per sample, a random subset of tokens to keep.

        Each sample gets its own random permutation (argsort of uniform
        noise); the first ``max(1, round(n_tokens * (1 - mask_ratio)))`` of
        it are kept.

        Parameters
        ----------
        n_tokens, batch : int
            Tokens per sample and number of samples.
        mask_ratio : float
            Share of tokens to hide, in [0, 1).
        generator : torch.Generator, optional
            Source of the noise (for reproducible masks); may live on another
            device than the model.

        Returns
        -------
        ids_keep : torch.Tensor of int64, shape (batch, n_keep)
            Kept token indices, in random order.
        mask : torch.Tensor of float32, shape (batch, n_tokens)
            1 where the token is masked, 0 where it is kept, in grid order.
        ids_restore : torch.Tensor of int64, shape (batch, n_tokens)
            Position of each grid token in the shuffled order
            (kept tokens first, then masked ones).
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise OrgasegError(f"mask ratio must be in [0, 1), got {mask_ratio}")
        device = self.mask_token.device
        noise_device = generator.device if generator is not None else device
        noise = torch.rand(batch, n_tokens, generator=generator, device=noise_device).to(device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        n_keep = max(1, round(n_tokens * (1.0 - mask_ratio)))
        mask = torch.ones(batch, n_tokens, device=device)
        mask[:, :n_keep] = 0.0
        mask = torch.gather(mask, 1, ids_restore)
        return ids_shuffle[:, :n_keep], mask, ids_restore

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of every patch from the visible tokens' encodings.

        Parameters
        ----------
        latent : torch.Tensor, shape (B, n_keep, embed_dim)
            Encoder output for the kept tokens, in the order of ``ids_keep``.
        ids_restore : torch.Tensor of int64, shape (B, N)
            From :meth:`random_masking`.

        Returns
        -------
        torch.Tensor, shape (B, N, C*P*P)
            Predicted patches in grid order.
        """
        x = self.decoder_embed(latent)
        batch, n_keep, width = x.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(batch, ids_restore.shape[1] - n_keep, width)
        x = torch.cat([x, mask_tokens], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, width)) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def patch_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Patches the decoder learns to predict: raw, or per-patch normalised if ``norm_pix_loss``."""
        target = self.patchify(imgs).float()
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / torch.sqrt(var + NORM_PIX_EPS)
        return target

    def masked_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the pixels of masked patches only (in float32).

        Parameters
        ----------
        imgs : torch.Tensor, shape (B, C, H, W)
            The fields of view.
        pred : torch.Tensor, shape (B, N, C*P*P)
            Predicted patches.
        mask : torch.Tensor, shape (B, N)
            1 for masked patches (the ones that count), 0 for visible ones.

        Returns
        -------
        torch.Tensor
            Scalar loss; 0 if no patch is masked.
        """
        per_patch = ((pred.float() - self.patch_target(imgs)) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode the visible patches, decode all, and score the masked ones.

        Parameters
        ----------
        imgs : torch.Tensor, shape (B, C, img_size, img_size)
            Normalised fields of view.
        mask_ratio : float, optional
            Overrides ``config.mask_ratio``.
        generator : torch.Generator, optional
            Source of the random masks.

        Returns
        -------
        loss : torch.Tensor
            Scalar :meth:`masked_loss`.
        pred : torch.Tensor, shape (B, N, C*P*P)
            Predicted patches (normalised units if ``norm_pix_loss``).
        mask : torch.Tensor, shape (B, N)
            1 = masked.
        """
        self._check_images(imgs)
        return self.masked_step(self.standardize(imgs), mask_ratio, generator)[:3]

    def standardize(self, imgs: torch.Tensor) -> torch.Tensor:
        """Fields of view in the model's input units: ``(imgs - input_mean) / input_std``."""
        return (imgs - self.config.input_mean) / self.config.input_std

    def masked_step(
        self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> MaskedStep:
        """Mask, encode and decode standardised fields of view ``x``; see :class:`MaskedStep`."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        ids_keep, mask, ids_restore = self.random_masking(self.n_tokens, x.shape[0], ratio, generator)
        latent = self.encoder(x, ids_keep)
        pred = self.decode(latent, ids_restore)
        return MaskedStep(self.masked_loss(x, pred, mask), pred, mask, latent, ids_keep)

    # -- inference --------------------------------------------------------------

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """Tokens of whole fields of view, without masking, on the token grid.

        Parameters
        ----------
        imgs : torch.Tensor, shape (B, C, img_size, img_size)

        Returns
        -------
        torch.Tensor, shape (B, gh, gw, embed_dim)
            The encoder's final-norm tokens; token ``(i, j)`` covers pixels
            ``[P*i, P*i + P) x [P*j, P*j + P)``.
        """
        return self.encode_with(self.encoder, imgs)

    def encode_with(self, encoder: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` with another encoder of the same architecture (e.g. an EMA teacher)."""
        self._check_images(imgs)
        gh, gw = self.config.grid
        return encoder(self.standardize(imgs)).reshape(imgs.shape[0], gh, gw, -1)

    @torch.no_grad()
    def reconstruct(
        self,
        imgs: torch.Tensor,
        mask_ratio: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct fields of view from a random subset of their patches, for figures.

        Visible patches are copied from the input, masked ones come from the
        prediction. With ``norm_pix_loss`` the prediction is brought back to
        pixel units with each masked patch's own mean and variance (the usual
        way to show such models; the true statistics are used only for display).

        Returns
        -------
        recon : torch.Tensor, shape (B, C, H, W)
            The reconstruction (float32, in the units of ``imgs``).
        mask : torch.Tensor, shape (B, 1, H, W)
            1 where the pixel's patch was masked.
        """
        self._check_images(imgs)
        x = self.standardize(imgs)
        _, pred, mask, _, _ = self.masked_step(x, mask_ratio, generator)
        pred = pred.float()
        target = self.patchify(x).float()
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            std = torch.sqrt(target.var(dim=-1, keepdim=True) + NORM_PIX_EPS)
            pred = pred * std + mean
        m = mask.unsqueeze(-1)
        recon = self.unpatchify(target * (1.0 - m) + pred * m) * self.config.input_std + self.config.input_mean
        p, (gh, gw) = self.config.patch_size, self.config.grid
        mask_img = mask.reshape(-1, 1, gh, gw).repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
        return recon, mask_img
