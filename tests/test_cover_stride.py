"""Cover-and-stride features: every pixel gets one token centred on it, blocks join seamlessly."""

import json

import numpy as np
import pytest
import torch

from orgaseg.errors import OrgasegError
from orgaseg.features.cover_stride import CoverStride, StrideOnly
from orgaseg.pipeline.blocks import make_blocks


def coordinate_image(height: int, width: int, depth: int = 1) -> np.ndarray:
    """Each pixel holds the code ``y * width + x`` (exact in float32 for these sizes)."""
    codes = np.arange(height * width, dtype=np.float32).reshape(height, width)
    return np.repeat(codes[None], depth, axis=0)


class CentreStub:
    """Token (i, j) = the input at its patch centre (P i + P//2, P j + P//2).

    With ``ids`` a second channel holds a number unique to every token ever
    returned; ``kept`` records the centre values of the central ``keep`` tokens.
    """

    def __init__(self, patch: int, ids: bool = False, keep: int | None = None) -> None:
        self.patch, self.ids, self.keep = patch, ids, keep
        self.calls = 0
        self.fovs = 0
        self.next_id = 0
        self.kept: list[np.ndarray] = []

    def __call__(self, fovs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.fovs += fovs.shape[0]
        centres = fovs[:, 0, self.patch // 2 :: self.patch, self.patch // 2 :: self.patch]
        if self.keep is not None:
            first = (centres.shape[1] - self.keep) // 2
            self.kept.append(centres[:, first : first + self.keep, first : first + self.keep].numpy().ravel())
        if not self.ids:
            return centres[..., None]
        n = centres.numel()
        ids = torch.arange(self.next_id, self.next_id + n, dtype=torch.float64).reshape(centres.shape)
        self.next_id += n
        return torch.stack([centres.double(), ids], dim=-1).float()


@pytest.mark.parametrize("height, width", [(37, 53), (130, 97)])
@pytest.mark.parametrize("keep", [2, 4, 8, 16])
def test_every_pixel_gets_the_token_centred_on_it(height, width, keep):
    image = coordinate_image(height, width)
    features = CoverStride(CentreStub(5), n_features=1, fov=80, patch=5, keep=keep)(image)
    assert features.shape == (1, height, width, 1)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features[0, ..., 0], image[0])


@pytest.mark.parametrize("fov, patch, keep", [(32, 4, 2), (21, 3, 3), (75, 5, 1)])
def test_alignment_for_other_grids_and_a_block_origin(fov, patch, keep):
    # even patches take the lower middle pixel as the centre; origins shift the tiling phase
    image = coordinate_image(45, 38, depth=2)
    strategy = CoverStride(CentreStub(patch), n_features=1, fov=fov, patch=patch, keep=keep)
    for origin in [(0, 0, 0), (3, 7, 13), (0, 101, 58)]:
        np.testing.assert_array_equal(strategy(image, origin=origin)[..., 0], image)


@pytest.mark.parametrize("height, width", [(37, 53), (130, 97)])
def test_stride_only_upsamples_each_token_over_its_patch(height, width):
    image = coordinate_image(height, width)
    features = CoverStride(CentreStub(5), n_features=1, fov=80, patch=5, mode="stride")(image)

    def centre(n, length):
        c = 5 * (n // 5) + 2  # centre of the patch holding the pixel
        return np.where(c < length, c, 2 * (length - 1) - c)  # reflected past the border

    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    expected = centre(ys, height) * width + centre(xs, width)
    np.testing.assert_array_equal(features[0, ..., 0], expected)
    # so most pixels do NOT get a token centred on them
    assert np.mean(features[0, ..., 0] != image[0]) > 0.9
    alias = StrideOnly(CentreStub(5), n_features=1, fov=80, patch=5)
    assert alias.config() == {**CoverStride(CentreStub(5), n_features=1).config(), "mode": "stride", "keep": 16}
    np.testing.assert_array_equal(alias(image), features)


def test_each_pixel_receives_exactly_one_token():
    height, width, keep = 61, 74, 4
    stub = CentreStub(5, ids=True, keep=keep)
    image = coordinate_image(height, width)
    features = CoverStride(stub, n_features=2, keep=keep, batch_size=37)(image)[0]
    np.testing.assert_array_equal(features[..., 0], image[0])  # centred on its pixel
    ids = features[..., 1].ravel()
    assert np.unique(ids).size == ids.size  # no token serves two pixels
    # how often each pixel is the centre of a kept token: once; tokens landing in the
    # reflected border (at most one period wide) may repeat codes of the outer rim only
    asked = np.bincount(np.concatenate(stub.kept).astype(np.int64), minlength=height * width)
    asked = asked.reshape(height, width)
    period = 5 * keep
    assert np.all(asked[period:-period, period:-period] == 1)
    assert np.all(asked >= 1)


@pytest.mark.parametrize("mode", ["cover", "stride"])
def test_blockwise_equals_whole_slice(mode):
    torch.manual_seed(0)
    patch, fov = 4, 32
    # tokens mix their neighbours and carry a position embedding, as in a ViT, so a
    # token depends on its place in the field of view: a wrong tiling phase shows at once
    embed = torch.nn.Conv2d(1, 6, patch, stride=patch)
    position = torch.randn(1, 6, fov // patch, fov // patch)
    mix = torch.nn.Conv2d(6, 5, 3, padding=1)

    def encode(fovs):
        return mix(torch.tanh(embed(fovs) + position)).permute(0, 2, 3, 1)

    volume = np.random.default_rng(1).random((2, 70, 90), dtype=np.float32)
    strategy = CoverStride(encode, n_features=5, fov=fov, patch=patch, keep=None if mode == "stride" else 4, mode=mode)
    whole = strategy(volume)
    blocks = make_blocks(volume.shape, (1, 23, 31), strategy.halo)
    assert len(blocks) > 9
    stitched = np.full(whole.shape, np.nan, dtype=np.float32)
    unanchored = np.full(whole.shape, np.nan, dtype=np.float32)
    for block in blocks:
        read = volume[block.read_region]
        origin = tuple(r.start for r in block.read_region)
        stitched[block.region] = strategy(read, origin=origin)[block.inner]
        unanchored[block.region] = strategy(read)[block.inner]
    np.testing.assert_allclose(stitched, whole, rtol=0, atol=1e-6)
    # the origin is what makes it work: anchoring the tiling at each block's corner does not
    assert not np.allclose(unanchored, whole, atol=1e-3)


@pytest.mark.parametrize("height, width", [(100, 100), (37, 53), (130, 97)])
@pytest.mark.parametrize("keep", [2, 4, 16])
def test_forward_passes_per_pixel(height, width, keep):
    stub = CentreStub(5)
    strategy = CoverStride(stub, n_features=1, keep=keep, batch_size=100)
    strategy(coordinate_image(height, width, depth=2))
    period = 5 * keep
    expected = 2 * 25 * -(-height // period) * -(-width // period)
    assert stub.fovs == expected == strategy.n_fields_of_view((2, height, width))
    assert stub.calls == -(-expected // 100)
    if height % period == 0 and width % period == 0:
        assert 2 * height * width / stub.fovs == keep**2 == 1 / strategy.forwards_per_pixel


def test_stride_only_forward_passes():
    stub = CentreStub(5)
    strategy = CoverStride(stub, n_features=1, mode="stride")
    strategy(coordinate_image(160, 170))
    assert stub.fovs == 2 * 3 == strategy.n_fields_of_view((1, 160, 170))
    assert strategy.forwards_per_pixel == 1 / 80**2


def test_flops_halo_config_and_progress():
    calls = []
    strategy = CoverStride(CentreStub(5), n_features=1, batch_size=64, progress=lambda *a: calls.append(a))
    assert strategy.halo == (0, 47, 47)  # 32 + 3 * 5 before, 79 - 32 after
    assert strategy.flops_per_pixel(1.6e9) == pytest.approx(1e8)
    stride = CoverStride(CentreStub(5), n_features=1, mode="stride")
    assert stride.halo == (0, 79, 79)
    assert stride.flops_per_pixel(6400.0) == pytest.approx(1.0)
    config = json.loads(json.dumps(strategy.config()))
    assert config == {"kind": "cover_stride", "mode": "cover", "fov": 80, "patch": 5, "keep": 4, "n_features": 1}
    assert stride.config()["mode"] == "stride" and stride.config()["keep"] == 16
    strategy(coordinate_image(30, 30))
    n_batches = -(-strategy.n_fields_of_view((1, 30, 30)) // 64)
    assert [c[1:] for c in calls] == [(i, n_batches) for i in range(1, n_batches + 1)]
    assert calls[0][0] == "cover-and-stride features"


def test_borders_are_reflected():
    # a stub returning the mean of its field of view sees reflected, not zero, padding
    image = np.ones((1, 20, 20), dtype=np.float32)

    def mean_stub(fovs):
        return fovs.mean(dim=(1, 2, 3))[:, None, None, None].expand(-1, 16, 16, 1)

    features = CoverStride(mean_stub, n_features=1)(image)
    np.testing.assert_allclose(features, 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"keep": 3}, "even margin"),
        ({"keep": 0}, "between 1"),
        ({"keep": 18}, "between 1"),
        ({"fov": 82}, "multiple of the patch"),
        ({"mode": "stride", "keep": 4}, "keep must be 16"),
        ({"mode": "expand"}, "mode must be one of"),
        ({"batch_size": 0}, "batch size"),
        ({"n_features": 0}, "n_features"),
        ({"device": "nonsense"}, "unknown torch device"),
    ],
)
def test_bad_parameters_are_clear_errors(kwargs, message):
    kwargs = {"n_features": 1, **kwargs}
    with pytest.raises(OrgasegError, match=message):
        CoverStride(CentreStub(5), **kwargs)


def test_bad_inputs_are_clear_errors():
    strategy = CoverStride(CentreStub(5), n_features=3)
    with pytest.raises(OrgasegError, match="returned tokens of shape"):
        strategy(coordinate_image(20, 20))
    with pytest.raises(OrgasegError, match="3D block"):
        CoverStride(CentreStub(5), n_features=1)(np.zeros((20, 20), np.float32))
    with pytest.raises(OrgasegError, match="origin"):
        CoverStride(CentreStub(5), n_features=1)(coordinate_image(20, 20), origin=(0, -1, 0))
