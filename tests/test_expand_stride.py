"""Expand-stride features: token centres on their pixels, seamless blocks, agreement with cover-and-stride."""

import numpy as np
import pytest
import torch

from orgaseg.errors import OrgasegError
from orgaseg.features.cover_stride import CoverStride
from orgaseg.features.expand_stride import ExpandStride, blend_weight
from orgaseg.pipeline.blocks import make_blocks

from test_cover_stride import CentreStub, coordinate_image


class CoordinateStub:
    """Token (i, j) = the (y, x) coordinates decoded from the code ``y * width + x`` at its patch centre."""

    def __init__(self, patch: int, width: int) -> None:
        self.patch, self.width = patch, width
        self.fovs = 0

    def __call__(self, fovs: torch.Tensor) -> torch.Tensor:
        self.fovs += fovs.shape[0]
        codes = fovs[:, 0, self.patch // 2 :: self.patch, self.patch // 2 :: self.patch].double()
        return torch.stack([torch.floor(codes / self.width), torch.remainder(codes, self.width)], dim=-1).float()


def _coordinates(height: int, width: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([ys, xs], axis=-1).astype(np.float32)


def test_stride_equal_to_the_field_of_view_puts_each_token_on_its_centre_pixel():
    # one field of view per pixel; inside [P//2, F - 1 - P//2] bilinear interpolation of linear
    # coordinates is exact, so every pixel gets its own coordinates, token centres included
    height, width = 200, 230
    image = coordinate_image(height, width)
    features = ExpandStride(CoordinateStub(5, width), n_features=2, fov=80, patch=5, stride=80)(image)[0]
    expected = _coordinates(height, width)
    # the tiling is anchored at 0 with S = F: a pixel's position in its field of view is y mod 80
    inside = ((np.arange(height) % 80 >= 2) & (np.arange(height) % 80 <= 77))[:, None] & \
             ((np.arange(width) % 80 >= 2) & (np.arange(width) % 80 <= 77))[None, :]
    away = np.zeros_like(inside)
    away[:160, :160] = True  # the last partial tile reaches into the reflected border
    np.testing.assert_allclose(features[inside & away], expected[inside & away], atol=1e-3)
    # the outer two pixels of a field of view take the outermost token's value: off by at most 2 px
    assert np.abs(features[away] - expected[away]).max() <= 2.0 + 1e-3


@pytest.mark.parametrize("stride", [20, 40, 60])
def test_overlapping_fields_of_view_blend_to_the_right_coordinates(stride):
    height, width = 220, 190
    image = coordinate_image(height, width)
    features = ExpandStride(CoordinateStub(5, width), n_features=2, fov=80, patch=5, stride=stride)(image)[0]
    interior = (slice(80, height - 80), slice(80, width - 80))  # away from the reflected borders
    error = np.abs(features[interior] - _coordinates(height, width)[interior])
    # only the faint edges of a neighbouring window (weight < 0.004) see clamped tokens
    assert error.max() < 0.05


def test_blocks_with_their_origin_equal_the_whole_slice():
    height, width = 150, 170
    image = coordinate_image(height, width, depth=2)
    strategy = ExpandStride(CoordinateStub(5, width), n_features=2, fov=80, patch=5, stride=40)
    whole = strategy(image)
    stitched = np.full_like(whole, np.nan)
    for block in make_blocks(image.shape, (1, 64, 48), strategy.halo):
        read = image[block.read_region]
        features = strategy(read, origin=tuple(r.start for r in block.read_region))
        stitched[block.region] = features[block.inner]
    np.testing.assert_allclose(stitched, whole, atol=1e-4)


def test_agrees_with_cover_and_stride_on_a_smooth_field():
    # tokens = intensity at the patch centre; cover-and-stride returns the image itself,
    # expand-stride its bilinear interpolation between centres 5 px apart
    ys, xs = np.meshgrid(np.arange(240), np.arange(240), indexing="ij")
    field = (np.sin(ys / 30.0) + np.cos(xs / 25.0) + 0.5 * np.sin((ys + xs) / 40.0)).astype(np.float32)[None]
    cover = CoverStride(CentreStub(5), n_features=1, fov=80, patch=5, keep=4)(field)[0, ..., 0]
    expand = ExpandStride(CentreStub(5), n_features=1, fov=80, patch=5, stride=40)(field)[0, ..., 0]
    np.testing.assert_array_equal(cover, field[0])
    interior = (slice(80, 160), slice(80, 160))
    assert np.abs(expand[interior] - cover[interior]).max() < 0.01 * np.ptp(field)


def test_one_forward_pass_per_stride_squared_pixels():
    stub = CoordinateStub(5, 400)
    strategy = ExpandStride(stub, n_features=2, fov=80, patch=5, stride=40, batch_size=7)
    image = coordinate_image(400, 400)
    strategy(image)
    # fields of view t = -1 .. 10 overlap 400 px at stride 40 (h = 20): 12 per axis
    assert stub.fovs == strategy.n_fields_of_view(image.shape) == 12 * 12
    assert strategy.forwards_per_pixel == 1 / 1600
    assert ExpandStride(stub, n_features=2, stride=80).n_fields_of_view((1, 400, 400)) == 25


def _blended_field_by_field(strategy: ExpandStride, image: np.ndarray) -> np.ndarray:
    """The definition, one field of view at a time: each token grid upsampled (torch's bilinear interpolation),
    weighted by the Hann window, summed over all fields of view covering a pixel, divided by their weights."""
    fov, stride, patch = strategy.fov, strategy.stride, strategy.patch
    depth, height, width = image.shape
    _, ty, before_y = strategy._axis_plan(height, 0)
    _, tx, before_x = strategy._axis_plan(width, 0)
    size = ((ty - 1) * stride + fov, (tx - 1) * stride + fov)
    padded = np.pad(image, ((0, 0), (before_y, size[0] - height - before_y), (before_x, size[1] - width - before_x)),
                    mode="reflect")
    weight = torch.from_numpy(np.outer(blend_weight(fov), blend_weight(fov))).float()[..., None]
    total = torch.zeros(depth, *size, strategy.n_features)
    weights = torch.zeros(*size, 1)
    for jy in range(ty):
        for jx in range(tx):
            y, x = jy * stride, jx * stride
            fovs = torch.from_numpy(padded[:, None, y : y + fov, x : x + fov].copy())
            tokens = strategy.encoder(fovs).permute(0, 3, 1, 2)
            upsampled = torch.nn.functional.interpolate(tokens, scale_factor=patch, mode="bilinear",
                                                        align_corners=False).permute(0, 2, 3, 1)
            total[:, y : y + fov, x : x + fov] += upsampled * weight
            weights[y : y + fov, x : x + fov] += weight
    return (total / weights)[:, before_y : before_y + height, before_x : before_x + width].numpy()


@pytest.mark.parametrize("stride, batch_size", [(40, 256), (40, 7), (30, 5), (80, 3)])
def test_separable_blending_equals_the_field_by_field_definition(stride, batch_size):
    # batches that end inside a slice, or span several, fill each slice's token grids alike
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 130, 175)).astype(np.float32)
    mixing = torch.from_numpy(rng.normal(size=(1, 1, 1, 3)).astype(np.float32))

    def encoder(fovs):  # tokens that vary within and across fields of view
        return torch.nn.functional.avg_pool2d(fovs, 5)[:, 0, ..., None] * mixing + torch.sin(fovs[:, 0, ::5, ::5, None])

    strategy = ExpandStride(encoder, n_features=3, fov=80, patch=5, stride=stride, batch_size=batch_size)
    np.testing.assert_allclose(strategy(image), _blended_field_by_field(strategy, image), atol=1e-5)


def test_half_field_stride_weights_sum_to_one():
    weight = blend_weight(80)
    np.testing.assert_allclose(weight[:40] + weight[40:], 1.0, atol=1e-12)
    assert weight.min() > 0


@pytest.mark.parametrize("stride", [0, 81, -5])
def test_invalid_strides_are_refused(stride):
    with pytest.raises(OrgasegError, match="stride"):
        ExpandStride(CentreStub(5), n_features=1, fov=80, patch=5, stride=stride)


def test_wrong_token_shape_is_a_clear_error():
    wrong = lambda fovs: torch.zeros(fovs.shape[0], 8, 8, 1)
    with pytest.raises(OrgasegError, match="tokens of shape"):
        ExpandStride(wrong, n_features=1, fov=80, patch=5)(np.zeros((1, 90, 90), np.float32))
