"""Han et al.'s patch VAE: shapes, KL per dimension, metric loss, rotation invariance, voxel latents, CLI."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import orgaseg
from orgaseg.cli import main
from orgaseg.errors import OrgasegError
from orgaseg.features.voxel_latents import VoxelLatents, grid_interpolation, interpolation_matrix
from orgaseg.io import compute_normalization
from orgaseg.methods.han_vae import PatchPairSampler, PatchSampling, random_rotation
from orgaseg.models.checkpoint import load_checkpoint
from orgaseg.models.encoder import load_encoder
from orgaseg.models.vae3d import (PatchVAE, VAEConfig, kl_per_dimension, model_preset, multi_similarity_loss,
                                  standardize_patches)


def _model(preset="tiny", ndim=3, seed=0):
    torch.manual_seed(seed)
    return PatchVAE(model_preset(preset, ndim))


@pytest.mark.parametrize("ndim", [3, 2])
def test_shapes_of_encoder_decoder_and_training_batch(ndim):
    model = _model(ndim=ndim)
    patches = torch.randn(5, 1, *(16,) * ndim)
    mean, std = model.posterior(patches)
    assert mean.shape == std.shape == (5, 16) and (std > 0).all()
    assert torch.equal(model.encode(patches), mean)
    recon_mean, recon_std = model.decode(mean)
    assert recon_mean.shape == recon_std.shape == (5, 1, *(16,) * ndim) and (recon_std > 0).all()
    loss, terms = model(torch.randn(3, 5, 1, *(16,) * ndim))
    assert loss.ndim == 0 and set(terms) == {"nll", "kl", "ms"}
    with pytest.raises(OrgasegError, match="patches"):
        model.encode(torch.randn(2, 1, *(8,) * ndim))


def test_paper_architecture_widths():
    config = VAEConfig()
    assert config.bottleneck == 4096 and config.latent == 64 and config.semantic == 8
    model = PatchVAE(config)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [128, 256, 512]
    assert model.hidden[0].in_features == 4096 and model.hidden[0].out_features == 256
    assert model.reconstruct[-1].out_channels == 2
    assert model.encode(torch.randn(2, 1, 16, 16, 16)).shape == (2, 64)
    assert VAEConfig(ndim=2).bottleneck == 2048


def test_the_paper_preset_trains_with_adam_and_amsgrad(tmp_path):
    from orgaseg.methods.han_vae import TRAIN_PRESETS
    from orgaseg.training import make_optimizer

    config = TRAIN_PRESETS["paper"]
    assert config.amsgrad and config.weight_decay == 0 and config.lr == 1e-4
    optimizer = make_optimizer(PatchVAE(VAEConfig(ndim=2, channels=(4, 8, 8), hidden=16, latent=16)), config)
    assert all(group["amsgrad"] for group in optimizer.param_groups)


def test_the_paper_preset_sees_the_reference_codes_anchors():
    # hanhongqing/pvae: batch_size_train 128 (pvae/main_BetaSeg.py); one epoch of N_TRAIN_TEST, 2,000,000
    # anchors from each of the three training cells (experiments/config.txt, experiments/test/run_segmentation.sh)
    from orgaseg.methods.han_vae import TRAIN_PRESETS

    config = TRAIN_PRESETS["paper"]
    assert config.batch_size == 128 and config.steps * config.batch_size == 3 * 2_000_000


def test_kl_is_summed_per_latent_dimension_and_averaged_over_the_batch():
    mean, std = torch.randn(6, 16), torch.rand(6, 16) + 0.1
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std),
                                                  torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(kl_per_dimension(mean, std), reference)
    model = _model()
    batch = torch.randn(2, 5, 1, 16, 16, 16)
    with torch.no_grad():
        kl = model.losses(batch)["kl"]
        posterior_mean, posterior_std = model.posterior(batch.flatten(0, 1))
        doubled = model.losses(torch.cat([batch, batch]))["kl"]
    torch.testing.assert_close(kl, kl_per_dimension(posterior_mean, posterior_std).sum(1).mean())
    torch.testing.assert_close(doubled, kl)  # not divided by the batch size


def _multi_similarity_by_loops(embeddings, labels, alpha, beta, margin):
    unit = F.normalize(embeddings, dim=1)
    total, counted = 0.0, 0
    for i in range(len(unit)):
        pos = [float(unit[i] @ unit[k]) for k in range(len(unit)) if k != i and labels[k] == labels[i]]
        neg = [float(unit[i] @ unit[k]) for k in range(len(unit)) if labels[k] != labels[i]]
        if pos or neg:
            counted += 1
            total += np.log1p(sum(np.exp(-alpha * (s - margin)) for s in pos)) / alpha
            total += np.log1p(sum(np.exp(beta * (s - margin)) for s in neg)) / beta
    return total / counted


def _euclidean_multi_similarity_by_loops(embeddings, labels, alpha, beta, margin):
    # as hanhongqing/pvae unsup_seg_vae/objectives.py: distances, the margin as the "1 +" of each sum
    total = 0.0
    for i in range(len(embeddings)):
        distances = [float(torch.linalg.norm(embeddings[i] - embeddings[k])) for k in range(len(embeddings))]
        pos = [d for k, d in enumerate(distances) if k != i and labels[k] == labels[i]]
        neg = [d for k, d in enumerate(distances) if labels[k] != labels[i]]
        total += np.log1p(sum(np.exp(alpha * (d - margin)) for d in pos)) / alpha
        total += np.log1p(sum(np.exp(-beta * (d - margin)) for d in neg)) / beta
    return total / len(embeddings)


def test_euclidean_multi_similarity_matches_the_reference_codes_definition():
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(10, 8, generator=generator) * 0.5
    labels = torch.arange(2).repeat_interleave(5)
    for alpha, beta, margin in ((1.0, 1.0, 1.0), (2.0, 3.0, 0.5)):
        value = multi_similarity_loss(embeddings, labels, alpha=alpha, beta=beta, margin=margin, distance="euclidean")
        expected = _euclidean_multi_similarity_by_loops(embeddings, labels, alpha, beta, margin)
        assert float(value) == pytest.approx(expected, rel=1e-5)
    coinciding = torch.zeros(4, 3, requires_grad=True)
    multi_similarity_loss(coinciding, torch.tensor([0, 0, 1, 1]), distance="euclidean").backward()
    assert torch.isfinite(coinciding.grad).all()


def test_the_paper_preset_reduces_the_loss_as_the_reference_code():
    # hanhongqing/pvae: loss_func_ELBO averages the NLL over a patch's samples and the batch; main_BetaSeg.py sums
    # the ELBO of the anchors and of each set of positives, then adds 1e3 x the distance-based metric loss
    assert model_preset("paper").nll_reduction == "mean" and model_preset("paper").ms_distance == "euclidean"
    assert model_preset("cpu").nll_reduction == "sum" and model_preset("cpu").ms_distance == "cosine"
    config = dataclasses.replace(model_preset("tiny"), nll_reduction="mean", ms_distance="euclidean")
    torch.manual_seed(0)
    model = PatchVAE(config)
    batch = torch.randn(3, 5, 1, 16, 16, 16)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        terms = model.losses(batch, torch.Generator().manual_seed(2))
        patches = batch.flatten(0, 1)
        mean, std = model.posterior(patches)
        noise = torch.randn(mean.shape, generator=generator)
        recon_mean, recon_std = model.decode(mean + std * noise)
        nll = -torch.distributions.Normal(recon_mean, recon_std).log_prob(patches).flatten(1).mean(1)
        kl = kl_per_dimension(mean, std).sum(1)
    torch.testing.assert_close(terms["nll"], nll.view(3, 5).sum(1).mean())
    torch.testing.assert_close(terms["kl"], kl.view(3, 5).sum(1).mean())
    labels = torch.arange(3).repeat_interleave(5)
    expected = _euclidean_multi_similarity_by_loops(mean[:, :config.semantic], labels, 1.0, 1.0, 1.0)
    assert float(terms["ms"]) == pytest.approx(expected, rel=1e-5)


def test_multi_similarity_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(10, 8, generator=generator)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    for alpha, beta, margin in ((1.0, 1.0, 1.0), (2.0, 50.0, 0.5)):
        value = multi_similarity_loss(embeddings, labels, alpha=alpha, beta=beta, margin=margin)
        assert float(value) == pytest.approx(_multi_similarity_by_loops(embeddings, labels, alpha, beta, margin), rel=1e-5)


def test_metric_loss_pulls_positives_together_on_a_toy_set():
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(6).repeat_interleave(5)
    embeddings = torch.randn(30, 8, generator=generator).requires_grad_()

    def similarities():
        unit = F.normalize(embeddings.detach(), dim=1)
        s = unit @ unit.T
        same = labels[:, None] == labels[None, :]
        return s[same & ~torch.eye(30, dtype=torch.bool)].mean(), s[~same].mean()

    pos_before, neg_before = similarities()
    optimizer = torch.optim.Adam([embeddings], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        multi_similarity_loss(embeddings, labels).backward()
        optimizer.step()
    pos_after, neg_after = similarities()
    assert pos_before < 0.1 and pos_after > 0.95
    # six groups spread as far apart as they can: mean cosine -1/5 between groups
    assert neg_after < -0.15


def _invariance_ratio(model, sampler, rows=32):
    """Mean cosine distance of the semantic means anchor-positive over that between anchors, on a fixed batch."""
    with torch.no_grad():
        batch = sampler.batch(10_000, rows)
        semantic = F.normalize(model.encode(batch.flatten(0, 1))[:, : model.config.semantic], dim=1)
        semantic = semantic.view(rows, batch.shape[1], -1)
        positive = (1 - (semantic[:, 1:] * semantic[:, :1]).sum(-1)).mean()
        anchors = semantic[:, 0]
        between = (1 - anchors @ anchors.T).sum() / (rows * (rows - 1))
    return float(positive / between)


def test_training_makes_the_semantic_subspace_rotation_invariant(phantom, tmp_path):
    # rotated, jittered copies of a patch move closer to it than other patches are, relative to the
    # untrained model (measured on seed 0: 0.89 before, about 0.45 after 300 steps of the 2D tiny model)
    volume = phantom.train[0]
    sampler = PatchPairSampler([volume], [compute_normalization(volume)], ndim=2,
                               sampling=PatchSampling(noise=0.0), seed=7)
    untrained = _invariance_ratio(_model(ndim=2), sampler)
    checkpoint = tmp_path / "vae.pt"
    orgaseg.train("han-vae-2d", [volume], checkpoint, preset="tiny", steps=300, device="cpu", seed=0)
    trained = _invariance_ratio(load_encoder(checkpoint).model, sampler)
    assert trained < 0.75 * untrained, (untrained, trained)


def test_sampler_batches_are_reproducible_and_rotations_proper(phantom):
    volume = phantom.train[0]
    sampler = PatchPairSampler([volume], [compute_normalization(volume)], ndim=3, seed=3)
    first, again = sampler.batch(5, 3), sampler.batch(5, 3)
    assert first.shape == (3, 5, 1, 16, 16, 16) and torch.equal(first, again)
    assert not torch.equal(first, sampler.batch(6, 3))
    rotation = random_rotation(np.random.default_rng(0), 3)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    flat = sampler.batch(0, 2).flatten(0, 1)
    # per-patch standardisation before the intensity augmentation: scaled by at most 2, shifted by 0.25
    assert flat.flatten(1).mean(1).abs().max() < 0.25 + 0.05
    assert standardize_patches(flat).flatten(1).std(1, unbiased=False).sub(1).abs().max() < 1e-4


def _reference_latents(encoder, block, voxel_size, radius, z, y, x):
    """The latent of one voxel's patch by ``grid_sample`` on the reflect-padded block (one patch, no shortcut)."""
    pad = 12
    padded = torch.from_numpy(np.pad(block, pad, mode="reflect"))[None, None]
    unit = min(voxel_size[1:])
    axes = [radius * unit / v * torch.linspace(-1, 1, 16, dtype=torch.float64) for v in voxel_size]
    gz, gy, gx = torch.meshgrid(*[a + c + pad for a, c in zip(axes, (z, y, x))], indexing="ij")
    size = padded.shape[2:]
    grid = torch.stack([2 * g / (n - 1) - 1 for g, n in zip((gx, gy, gz), size[::-1])], dim=-1)[None].float()
    patch = F.grid_sample(padded, grid, mode="bilinear", align_corners=True)[0, 0]
    with torch.no_grad():
        return encoder(standardize_patches(patch[None])[:, None])[0]


def test_stride_one_is_one_patch_per_voxel_and_stride_two_approximates_it(phantom):
    model = _model().eval()
    block = compute_normalization(phantom.evaluation[0].raw).apply(phantom.evaluation[0].raw.read())[:5, 20:40, 30:50]
    voxel_size = (40.0, 20.0, 20.0)
    full = VoxelLatents(model.encode, latent=16, voxel_size=voxel_size, stride=1, subspace="all")
    features = full(block)
    assert features.shape == (5, 20, 20, 16)
    for z, y, x in ((2, 10, 10), (0, 0, 19), (4, 7, 3)):
        expected = _reference_latents(model.encode, block, voxel_size, 4.0, z, y, x)
        np.testing.assert_allclose(features[z, y, x], expected.numpy(), atol=2e-4, rtol=1e-4)
    strided = VoxelLatents(model.encode, latent=16, voxel_size=voxel_size, stride=2, subspace="all")
    assert strided.strides == (1, 2, 2) and strided.forwards_per_voxel == 0.25
    approx = strided(block)
    np.testing.assert_allclose(approx[:, ::2, ::2], features[:, ::2, ::2], atol=1e-4)  # grid points are exact
    error = np.abs(approx - features).mean() / features.std()
    assert error < 0.25, error
    correlation = np.corrcoef(approx.ravel(), features.ravel())[0, 1]
    assert correlation > 0.95


@pytest.mark.parametrize("ndim,stride", [(3, 2), (2, 3)])
def test_blockwise_latents_equal_whole_volume_latents(ndim, stride):
    # a block read with its halo, computed whole and cropped or as a kept part, gives the whole volume's latents;
    # a kept part encodes only the grid points it interpolates from, not those of its window
    model = _model(ndim=ndim).eval()
    volume = np.random.default_rng(0).random((8, 30, 26)).astype(np.float32)
    extractor = VoxelLatents(model.encode, latent=16, voxel_size=(30.0, 10.0, 10.0), ndim=ndim, stride=stride)
    whole = extractor(volume)
    assert whole.shape == (8, 30, 26, 8)
    encoded = []

    def counting(patches):
        encoded.append(len(patches))
        return model.encode(patches)

    extractor.encoder = counting
    for part in [(slice(2, 5), slice(9, 21), slice(5, 17)), (slice(0, 8), slice(0, 4), slice(20, 26))]:
        window = tuple(slice(max(0, p.start - h), min(n, p.stop + h))
                       for p, h, n in zip(part, extractor.halo, volume.shape))
        keep = tuple(slice(p.start - w.start, p.stop - w.start) for p, w in zip(part, window))
        origin = tuple(w.start for w in window)
        np.testing.assert_allclose(extractor(volume[window], origin=origin)[keep], whole[part], atol=1e-5)
        encoded.clear()
        np.testing.assert_allclose(extractor(volume[window], origin=origin, keep=keep), whole[part], atol=1e-5)
        points = [len(range(p.start // s * s, -(-(p.stop - 1) // s) * s + 1, s)) for p, s in zip(part, extractor.strides)]
        assert sum(encoded) == np.prod(points)


def test_anisotropic_patches_are_cubes_in_nanometres():
    # vnc at 16 nm working pixels: 50 nm sections; r = 4 -> 64 nm half-extent = 1.28 sections
    model = _model().eval()
    extractor = VoxelLatents(model.encode, latent=16, voxel_size=(50.0, 16.0, 16.0), stride=4)
    assert extractor.window == (5, 9, 9)
    assert extractor.strides == (1, 4, 4)  # 4 x 16 nm = 64 nm is about one section
    weights = interpolation_matrix(1.28, 16)
    assert weights.shape == (16, 5)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights @ np.arange(-2, 3), 1.28 * np.linspace(-1, 1, 16), atol=1e-6)
    matrix, first = grid_interpolation(7, 5, 4)
    assert first == 4 and matrix.shape == (7, 3)
    np.testing.assert_allclose(matrix @ np.array([4.0, 8.0, 12.0]), np.arange(5, 12), atol=1e-6)


def test_bad_options_are_clear_errors():
    model = _model().eval()
    with pytest.raises(OrgasegError, match="stride"):
        VoxelLatents(model.encode, latent=16, voxel_size=(10, 10, 10), stride=0)
    with pytest.raises(OrgasegError, match="subspace"):
        VoxelLatents(model.encode, latent=16, voxel_size=(10, 10, 10), subspace="rotation")
    with pytest.raises(OrgasegError, match="3D block"):
        VoxelLatents(model.encode, latent=16, voxel_size=(10, 10, 10))(np.zeros((4, 4)))
    # a stride as wide as a plane leaves one grid point across it: the labels were bands of an interpolation
    # between that point's latent and its mirror image's
    wide = VoxelLatents(model.encode, latent=16, voxel_size=(10, 10, 10), ndim=2, stride=40)
    with pytest.raises(OrgasegError, match=r"the stride, 40 working pixels, is not smaller than the planes' 40 x 64 "
                                           r"working pixels \(y x\): along y a plane holds one grid point.* use a "
                                           r"stride below 40"):
        wide.check_shape((3, 40, 64))
    wide.check_shape((3, 41, 64))  # two grid points along y: read


def test_cli_train_resume_and_segment_both_variants(phantom, tmp_path, capsys):
    raw = tmp_path / "raw.npy"
    np.save(raw, phantom.train[0].read()[:6, :64, :64])
    common = ["--voxel-size", "20", "20", "20", "--quiet"]
    for method, features in (("han-vae-2d", "voxel_latents"), ("han-vae", "voxel_latents")):
        ckpt = tmp_path / f"{method}.pt"
        assert main(["train", str(raw), "--method", method, "--preset", "tiny", "--steps", "3", "-o", str(ckpt)]
                    + common) == 0
        assert main(["train", str(raw), "--method", method, "--steps", "5", "--resume", "-o", str(ckpt)] + common) == 0
        record = load_checkpoint(ckpt, method=method)
        assert record["step"] == 5 and record["encoder"] == ("patch-vae-3d" if method == "han-vae" else "patch-vae-2d")
        assert record["pixel_size_nm"] is None  # 20 nm input: the 16 nm default only coarsens
        out = tmp_path / f"{method}.tif"
        assert main(["segment", str(raw), "--method", method, "--model", str(ckpt), "-k", "3", "--stride", "4",
                     "-o", str(out)] + common) == 0
        provenance = json.loads((tmp_path / f"{method}.tif.provenance.json").read_text())
        assert provenance["config"]["extractor"]["kind"] == features
        assert provenance["config"]["extractor"]["stride"] == 4
        assert provenance["config"]["extractor"]["ndim"] == (3 if method == "han-vae" else 2)
    # a stride as wide as the 64 x 64 planes, on its own or inside the superpixel context, is refused
    capsys.readouterr()
    for extra in ([], ["--option", "context=9"]):
        assert main(["segment", str(raw), "--method", "han-vae-2d", "--model", str(tmp_path / "han-vae-2d.pt"), "-k",
                     "3", "--stride", "64", *extra, "-o", str(tmp_path / "wide.tif")] + common) == 2
        assert ("the stride, 64 working pixels, is not smaller than the planes' 64 x 64 working pixels (y x): along y "
                "and x a plane holds one grid point") in capsys.readouterr().err
    assert not (tmp_path / "wide.tif").exists()
    # a 2D checkpoint does not fit the 3D method
    assert main(["segment", str(raw), "--method", "han-vae", "--model", str(tmp_path / "han-vae-2d.pt"), "-k", "3",
                 "-o", str(tmp_path / "bad.tif")] + common) == 2
    # inspect draws a ViT's reconstructions: a clear refusal, not a crash
    assert main(["inspect", str(tmp_path / "han-vae.pt"), str(raw), "-o", str(tmp_path / "figures")] + common) == 2
    assert "inspect draws a ViT's masked reconstructions" in capsys.readouterr().err


def test_training_patches_are_reflected_at_the_volume_edge_as_segmentation_pads_blocks(phantom):
    from orgaseg.features.base import reflected_span

    volume = phantom.train[0]
    normalization = compute_normalization(volume)
    sampler = PatchPairSampler([volume], [normalization], ndim=3, seed=0)
    values = normalization.apply(volume.read())
    depth, height, width = values.shape
    # whole voxel positions beyond either edge take the voxels reflect-padding gives the blocks at inference
    points = np.array([[-2.0, 3.0, 4.0], [1.0, -1.0, width + 1.0], [depth, height - 1.0, 0.0]])
    padded = reflected_span(values, (0, 0, 0), [(-3, depth + 3), (-3, height + 3), (-3, width + 3)])
    expected = [padded[tuple(int(c) + 3 for c in point)] for point in points]
    np.testing.assert_allclose(sampler._interpolate(0, points, None), expected, rtol=1e-6)
