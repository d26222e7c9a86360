"""Vision-transformer building blocks: patch embedding, position embedding, blocks, encoder.

Written for MAESTER-style encoders (Xie et al., CVPR 2023): tiny patches (5x5
pixels) in a small field of view (80x80 pixels), one token per patch and no
class token. Tokens are always in row-major order of the token grid: token
``n`` covers the patch at grid row ``n // grid_w``, column ``n % grid_w``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from orgaseg.errors import OrgasegError

#: LayerNorm epsilon of every block and final norm.
LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping square patches and project each to a token.

    Parameters
    ----------
    patch_size : int
        Patch side in pixels (the convolution's kernel and stride).
    in_chans : int
        Image channels.
    embed_dim : int
        Token width.
    """

    def __init__(self, patch_size: int, in_chans: int = 1, embed_dim: int = 192) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens of shape ``(B, N, D)`` for images ``(B, C, H, W)``, row-major over the patch grid."""
        return self.proj(x).flatten(2).transpose(1, 2)

    def reset_parameters(self) -> None:
        """Initialise the projection as a Linear layer over flattened patches (Xavier uniform, zero bias)."""
        weight = self.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.proj.bias)


def sincos_pos_embed_2d(embed_dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding of a token grid.

    The first half of the channels encodes the row, the second half the
    column. Within each half of width ``d = embed_dim // 2``, the first
    ``d / 2`` channels are ``sin(pos * w_i)`` and the last ``d / 2`` are
    ``cos(pos * w_i)`` with geometric frequencies ``w_i = 1 / 10000**(2 i / d)``,
    ``i = 0 .. d/2 - 1``.

    Parameters
    ----------
    embed_dim : int
        Embedding width; must be divisible by 4.
    grid_h, grid_w : int
        Token grid shape (rows, columns).

    Returns
    -------
    torch.Tensor of float32, shape (grid_h * grid_w, embed_dim)
        Row ``n`` is the embedding of grid position ``(n // grid_w, n % grid_w)``.

    Raises
    ------
    ValueError
        If ``embed_dim`` is not a positive multiple of 4 or the grid is empty.
    """
    if embed_dim <= 0 or embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {embed_dim}")
    if grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"sin-cos position embedding needs a non-empty grid, got {grid_h}x{grid_w}")
    half = embed_dim // 2
    freqs = 1.0 / 10000.0 ** (torch.arange(half // 2, dtype=torch.float64) * 2.0 / half)

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.to(torch.float64)[:, None] * freqs[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    embed = torch.cat([encode(rows.reshape(-1)), encode(cols.reshape(-1))], dim=1)
    return embed.to(torch.float32)


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv projection, scaled dot-product attention).

    Parameters
    ----------
    dim : int
        Token width; must be divisible by ``heads``.
    heads : int
        Number of attention heads.
    qkv_bias : bool
        Whether the query/key/value projection has a bias.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if heads <= 0 or dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = int(heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, n_tokens, dim))


class Mlp(nn.Module):
    """Two-layer perceptron with GELU, hidden width ``int(dim * ratio)``."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Parameters
    ----------
    dim : int
        Token width.
    heads : int
        Attention heads (must divide ``dim``).
    mlp_ratio : float
        MLP hidden width as a multiple of ``dim``.
    qkv_bias : bool
        Whether the attention's qkv projection has a bias.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Initialise one module in place, for use with ``model.apply(init_weights)``.

    Linear layers: Xavier-uniform weights, zero bias. Patch embeddings: the
    same on the convolution's flattened weight. LayerNorm: weight 1, bias 0.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, PatchEmbed):
        module.reset_parameters()


class ViTEncoder(nn.Module):
    """ViT encoder: patch embedding, scaled fixed position embedding, blocks, final LayerNorm.

    There is no class token: MAESTER clusters the patch tokens themselves and
    never needs an image-level summary.

    The position embedding is the fixed 2D sine-cosine embedding multiplied
    by ``pos_weight`` (0.08 in MAESTER) so the tokens carry little position
    information and clusters follow texture rather than location in the field
    of view. It is a non-trainable buffer, left out of the state dict because
    it is rebuilt from the arguments.

    Parameters
    ----------
    img_size : int or (int, int)
        Field-of-view size in pixels (square if an int); a multiple of ``patch_size``.
    patch_size : int
        Patch side in pixels.
    in_chans : int
        Image channels.
    embed_dim : int
        Token width (divisible by ``heads`` and by 4).
    depth : int
        Number of transformer blocks.
    heads : int
        Attention heads.
    mlp_ratio : float
        MLP hidden width as a multiple of ``embed_dim``.
    pos_weight : float
        Factor applied to the sine-cosine position embedding.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 80,
        patch_size: int = 5,
        in_chans: int = 1,
        embed_dim: int = 192,
        depth: int = 14,
        heads: int = 1,
        mlp_ratio: float = 2.0,
        pos_weight: float = 0.08,
    ) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(size) != 2 or any(s <= 0 or s % patch_size for s in size):
            raise ValueError(f"image size {img_size} is not a positive multiple of the patch size {patch_size}")
        self.img_size = (int(size[0]), int(size[1]))
        self.patch_size = int(patch_size)
        self.in_chans = int(in_chans)
        self.embed_dim = int(embed_dim)
        self.pos_weight = float(pos_weight)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        pos = sincos_pos_embed_2d(embed_dim, *self.grid) * self.pos_weight
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(Block(embed_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.apply(init_weights)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid shape ``(rows, columns)``."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def n_tokens(self) -> int:
        """Tokens per field of view."""
        return math.prod(self.grid)

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode images, optionally only a subset of their tokens.

        Parameters
        ----------
        x : torch.Tensor, shape (B, in_chans, H, W)
            Images of exactly ``img_size``.
        ids_keep : torch.Tensor of int64, shape (B, n_keep), optional
            Indices (row-major on the token grid) of the tokens to keep per
            sample; they are selected after the position embedding is added,
            so each keeps its own position. Only they enter the blocks.

        Returns
        -------
        torch.Tensor, shape (B, n_keep or N, embed_dim)
            Final-norm tokens, in the order of ``ids_keep`` when given.
        """
        expected = (self.in_chans, *self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            expected_text = ", ".join(map(str, expected))
            raise OrgasegError(f"encoder expects images of shape (B, {expected_text}), got {tuple(x.shape)}")
        tokens = self.patch_embed(x) + self.pos_embed
        if ids_keep is not None:
            if ids_keep.ndim != 2 or ids_keep.shape[0] != x.shape[0]:
                raise ValueError(f"ids_keep must have shape (B={x.shape[0]}, n_keep), got {tuple(ids_keep.shape)}")
            index = ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, index)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


def encoder_flops(img_size: int, patch_size: int, in_chans: int, embed_dim: int, depth: int,
                  mlp_ratio: float) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one unmasked forward pass of :class:`ViTEncoder`.

    Counts the matrix products: patch embedding, and per block the qkv
    projection, attention scores, attention-weighted values, output
    projection and the two MLP layers. Norms, softmax and GELU (a few
    FLOPs per element) are left out.
    """
    n = (img_size // patch_size) ** 2
    d = embed_dim
    hidden = int(d * mlp_ratio)
    embed = 2 * n * (in_chans * patch_size**2) * d
    per_block = 2 * n * d * 3 * d + 2 * n * n * d * 2 + 2 * n * d * d + 2 * n * d * hidden * 2
    return embed + depth * per_block
