"""Expand-stride features: token centres on their pixels, seamless blocks, agreement with cover-and-stride."""

import numpy as np
import pytest
import torch

from orgaseg.errors import OrgasegError
from orgaseg.features.cover_stride import CoverStride
from orgaseg.features import expand_stride
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


def test_a_batch_is_upsampled_a_few_fields_of_view_at_a_time(monkeypatch):
    # an upsampled field of view is F x F x D floats: a whole batch at once would hold 0.8 GB at D = 128
    image = coordinate_image(150, 170, depth=2)
    expected = ExpandStride(CoordinateStub(5, 170), n_features=2, fov=80, patch=5, stride=40)(image)
    strategy = ExpandStride(CoordinateStub(5, 170), n_features=2, fov=80, patch=5, stride=40, batch_size=64)
    upsampled = []
    expand = strategy._expanded_tokens
    monkeypatch.setattr(strategy, "_expanded_tokens", lambda tokens: upsampled.append(len(tokens)) or expand(tokens))
    monkeypatch.setattr(expand_stride, "EXPANDED_ROWS", 5)
    np.testing.assert_array_equal(strategy(image), expected)
    assert max(upsampled) == 5 and sum(upsampled) == strategy.n_fields_of_view(image.shape)


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
