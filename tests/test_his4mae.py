"""HiS4MAE and sdae-recon: EMA teacher, codebook gradients, code revival, resume, fixed centres, CLI."""

import json

import numpy as np
import pytest
import torch

import orgaseg
from orgaseg.cli import main
from orgaseg.cluster.kmeans import fit_kmeans
from orgaseg.io import compute_normalization
from orgaseg.methods import get_method, thousandth_sample
from orgaseg.methods.his4mae import EPOCH_STEPS
from orgaseg.models.encoder import load_encoder
from orgaseg.models.checkpoint import load_checkpoint
from orgaseg.models.distill import DistillConfig, DistilledMAE, teacher_momentum
from orgaseg.models.mae import MODEL_PRESETS

CLASSES = ("cytoplasm", "nucleus", "mitochondria", "granules", "membrane")


def _model(codebook_size=16, **kwargs):
    torch.manual_seed(0)
    return DistilledMAE(MODEL_PRESETS["tiny"], DistillConfig(codebook_size=codebook_size, epoch_steps=5, **kwargs))


def _images(n=4, seed=0):
    return torch.rand(n, 1, 80, 80, generator=torch.Generator().manual_seed(seed))


def test_teacher_starts_as_the_student_and_moves_only_by_ema():
    model = _model()
    for t, s in zip(model.teacher.parameters(), model.student.encoder.parameters()):
        assert torch.equal(t, s) and not t.requires_grad
    before = [p.detach().clone() for p in model.teacher.parameters()]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = model(_images(), generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    optimizer.step()
    students = [p.detach().clone() for p in model.student.encoder.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(before, students))  # the student did move
    model.after_step(3, 10)
    m = teacher_momentum(3, 10, 0.996)
    for teacher, old, student in zip(model.teacher.parameters(), before, students):
        torch.testing.assert_close(teacher, m * old + (1 - m) * student)


def test_momentum_rises_from_its_base_to_one():
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(99, 100, 0.996) == pytest.approx(1.0)
    values = [teacher_momentum(s, 100, 0.996) for s in range(100)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def _grads(model, term):
    model.zero_grad(set_to_none=True)
    terms = model.losses(_images(), generator=torch.Generator().manual_seed(2))
    terms[term].backward()
    student = [p.grad for p in model.student.parameters()]
    student_moves = any(g is not None and g.abs().sum() > 0 for g in student)
    code_grad = model.codebook.grad if model.codebook is not None else None
    codes_move = code_grad is not None and code_grad.abs().sum() > 0
    return student_moves, codes_move


def test_codes_learn_from_the_teacher_loss_only_and_the_student_from_the_others():
    model = _model()
    model(_images())  # first batch initialises the codebook
    assert _grads(model, "tea") == (False, True)
    assert _grads(model, "stu") == (True, False)
    assert _grads(model, "recon") == (True, False)


def test_code_loss_is_the_mse_between_chosen_codes_and_teacher_tokens():
    model = _model(codebook_size=32)
    x = _images(3)
    model(x)
    z_tea = model.teacher(model.student.standardize(x))
    ids = model.nearest_codes(z_tea)
    expected = torch.nn.functional.mse_loss(model.codebook[ids], z_tea)
    torch.testing.assert_close(model.code_loss(z_tea, ids), expected, rtol=1e-4, atol=1e-6)


def test_codebook_starts_on_teacher_tokens_and_chosen_codes_are_counted():
    model = _model(codebook_size=8)
    x = _images(2)
    model(x)
    tokens = model.teacher(model.student.standardize(x)).reshape(-1, model.config.embed_dim)
    # every code is one of the first batch's teacher tokens
    distances = torch.cdist(model.codebook.detach(), tokens.detach())
    assert torch.all(distances.min(dim=1).values < 1e-2)  # (cdist rounds; tokens are ~1 apart)
    assert model.code_counts.sum() == 2 * model.n_tokens


def _four_popular_codes_of_forty():
    """A codebook whose codes 0-3 took every token of the epoch: the other 36 are isolated."""
    model = _model(codebook_size=40, survivor_share=0.1)
    with torch.no_grad():
        model.codebook.copy_(torch.arange(40, dtype=torch.float32)[:, None].expand(40, model.config.embed_dim))
        model.codebook_ready.fill_(True)
    model.code_counts.copy_(torch.tensor([500.0, 400, 300, 200] + [0.0] * 36, dtype=torch.float64))
    return model


def _revived_at_the_end_of_an_epoch(seed):
    model = _four_popular_codes_of_forty()
    model.after_step(model.distill.epoch_steps - 1, 100, seed)
    return model.codebook.detach().clone()


def test_the_run_seed_reaches_the_survivors_drawn_for_isolated_codes():
    # 36 isolated codes each draw one of 4 survivors: two seeds drawing alike would be a 4**-36 chance
    assert not torch.equal(_revived_at_the_end_of_an_epoch(1), _revived_at_the_end_of_an_epoch(2))
    assert torch.equal(_revived_at_the_end_of_an_epoch(1), _revived_at_the_end_of_an_epoch(1))
    # seed 0 draws what runs drew before the seed reached the revival (seeded by the step alone)
    model = _four_popular_codes_of_forty()
    model.revive_isolated_codes(seed=model.distill.epoch_steps - 1)
    assert torch.equal(_revived_at_the_end_of_an_epoch(0), model.codebook.detach())


def test_isolated_codes_are_pulled_towards_popular_ones():
    model = _model(codebook_size=10, gamma=0.8)
    with torch.no_grad():
        model.codebook.copy_(torch.arange(10, dtype=torch.float32)[:, None].expand(10, model.config.embed_dim))
        model.codebook_ready.fill_(True)
    model.code_counts.copy_(torch.tensor([500, 400, 0, 300, 0, 200, 100, 100, 0, 1], dtype=torch.float64))
    old = model.codebook.detach().clone()
    entry = model.revive_isolated_codes(seed=0)
    # shares below 0.1 / 10 = 1% of 2101 tokens (21): codes 2, 4, 8 and 9; the survivor is code 0 (top 10%)
    assert entry["isolated"] == 4 and entry["dead"] == 3
    new = model.codebook.detach()
    for code in (2, 4, 8, 9):
        torch.testing.assert_close(new[code], 0.8 * old[0] + 0.2 * old[code])
    for code in (0, 1, 3, 5, 6, 7):
        assert torch.equal(new[code], old[code])
    assert 1.0 < entry["perplexity"] < 10.0
    assert model.code_counts.sum() == 0 and model.usage_log[-1] == entry


def test_sdae_recon_has_no_codebook_and_aligns_to_teacher_tokens():
    model = _model(codebook_size=0)
    assert model.codebook is None
    terms = model.losses(_images())
    assert float(terms["tea"]) == 0.0 and float(terms["stu"].detach()) > 0.0
    assert _grads(model, "stu") == (True, False)


@pytest.fixture(scope="module")
def checkpoint(phantom, tmp_path_factory):
    path = tmp_path_factory.mktemp("his4mae") / "tiny.pt"
    get_method("his4mae").train(phantom.train, path, preset="tiny", steps=300, device="cpu", seed=0)
    return path


def test_a_constant_volume_is_refused_by_segment_and_train(checkpoint, tmp_path):
    # its encoder's tokens vary with the position embeddings: k-means split a constant volume into K clusters
    constant = orgaseg.io.as_volume(np.full((2, 96, 96), 7, np.uint8), voxel_size=(10, 10, 10), path="blank.tif")
    refused = r"blank\.tif: every sampled intensity \(18,432 voxels\) is 7: the volume is constant"
    with pytest.raises(orgaseg.OrgasegError, match=refused):
        orgaseg.segment(constant, method="his4mae", model=checkpoint, k=3)
    with pytest.raises(orgaseg.OrgasegError, match=refused):
        get_method("his4mae").train([constant], tmp_path / "blank.pt", preset="tiny", steps=2, device="cpu")
    assert not list(tmp_path.iterdir())


def test_checkpoint_logs_codebook_usage_and_rebuilds_the_model(checkpoint):
    record = load_checkpoint(checkpoint, method="his4mae")
    usage = record["codebook_usage"]
    assert len(usage) == 300 // EPOCH_STEPS["tiny"]
    assert all(0 < entry["perplexity"] <= 512 for entry in usage)
    assert record["distill_config"]["codebook_size"] == 512
    encoder = load_encoder(checkpoint)
    assert (encoder.name, encoder.kind, encoder.fov, encoder.patch) == ("distilled-mae", "tokens-2d", 80, 5)
    model = encoder.model
    assert model.usage_log == usage
    fovs = _images(3)
    with torch.inference_mode():
        tokens = model.encode(fovs)
        assert tokens.shape == (3, 16, 16, model.config.embed_dim)
        assert torch.equal(tokens, model.student.encode_with(model.teacher, fovs))  # inference uses the teacher


def test_resume_continues_the_same_loss_curve_across_a_code_revival(phantom, tmp_path):
    train = get_method("his4mae").train
    straight = train(phantom.train, tmp_path / "a.pt", preset="tiny", steps=30, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(phantom.train, tmp_path / "b.pt", preset="tiny", steps=30, device="cpu",
              progress=_interrupt_at(12))
    resumed = train(phantom.train, tmp_path / "b.pt", resume=True, device="cpu")
    assert resumed["losses"] == straight["losses"]
    assert resumed["codebook_usage"] == straight["codebook_usage"]  # revived at step 20, after the resume


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_in_the_middle_of_a_step_resumes_as_the_uninterrupted_run(phantom, tmp_path, monkeypatch,
                                                                            signal_name):
    # the signal comes right after step 12's forward pass counted its codes: the step finishes before the
    # checkpoint, or the resume counts step 12's codes twice and revives other codes at step 20
    import os
    import signal

    from orgaseg.cli import _terminate
    from orgaseg.models.distill import DistilledMAE

    train = get_method("his4mae").train
    straight = train(phantom.train, tmp_path / "a.pt", preset="tiny", steps=30, device="cpu")
    assign_codes, calls = DistilledMAE.assign_codes, []

    def interrupting(self, z_tea, generator=None):
        ids = assign_codes(self, z_tea, generator)
        calls.append(1)
        if len(calls) == 13:
            os.kill(os.getpid(), getattr(signal, signal_name))
        return ids

    monkeypatch.setattr(DistilledMAE, "assign_codes", interrupting)
    previous = signal.signal(signal.SIGTERM, _terminate)  # as the command line handles it
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            train(phantom.train, tmp_path / "b.pt", preset="tiny", steps=30, device="cpu")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "at step 13 of 30" in raised.value.__notes__[0]
    monkeypatch.undo()
    resumed = train(phantom.train, tmp_path / "b.pt", resume=True, device="cpu")
    assert resumed["losses"] == straight["losses"]
    assert resumed["codebook_usage"] == straight["codebook_usage"]


def _interrupt_at(step):
    def progress(description, done, total, **figures):
        if description == "training" and done == step:
            raise KeyboardInterrupt
    return progress


def test_briefly_trained_model_finds_the_textured_nucleus_with_expand_stride(phantom, checkpoint):
    item = phantom.evaluation[0]
    learned = orgaseg.segment(item.raw, method="his4mae", model=checkpoint, k=8)
    raw = item.raw.read()
    normalized = compute_normalization(item.raw).apply(raw)
    intensity = fit_kmeans(normalized.reshape(-1, 1)[::4], 8, seed=0).predict(normalized[..., None])
    score = lambda labels: orgaseg.evaluate(labels, item.reference, classes=CLASSES,
                                            background=["cytoplasm"]).to_dict()["merge"]["per_class"]
    assert score(learned.labels)["nucleus"]["dice"] > score(intensity)["nucleus"]["dice"] + 0.2
    assert learned.provenance["config"]["features"] == "expand-stride"
    features = learned.provenance["config"]["extractor"]
    assert features["kind"] == "expand_stride" and features["stride"] == 40


def test_fixed_centres_are_reproducible_and_sampled_from_a_thousandth(phantom, checkpoint):
    item = phantom.evaluation[0]
    first = orgaseg.segment(item.raw, method="his4mae", model=checkpoint, k=5, options={"stride": 80})
    second = orgaseg.segment(item.raw, method="his4mae", model=checkpoint, k=5, options={"stride": 80})
    assert np.array_equal(first.labels, second.labels)
    assert first.model.to_dict()["centers"] == second.model.to_dict()["centers"]
    assert first.provenance["config"]["sample_size"] == thousandth_sample(item.raw.size) == 20_000
    assert thousandth_sample(10**8) == 100_000 and thousandth_sample(10**10) == 1_000_000


def test_cli_segments_with_expand_stride_and_refuses_misplaced_options(phantom, checkpoint, tmp_path, capsys):
    volume = tmp_path / "raw.npy"
    np.save(volume, phantom.evaluation[0].raw.read()[:4])
    out = tmp_path / "labels.ome.zarr"
    assert main(["segment", str(volume), "--method", "his4mae", "--model",
                 str(checkpoint), "-k", "4", "--features", "expand-stride", "--stride", "20", "-o", str(out),
                 "--quiet"]) == 0
    provenance = json.loads((tmp_path / "labels.ome.zarr.provenance.json").read_text())
    assert provenance["config"]["extractor"]["stride"] == 20
    assert main(["segment", str(volume), "--method", "his4mae", "--model", str(checkpoint), "--features",
                 "cover-stride", "--stride", "20", "-o", str(tmp_path / "x.tif"), "--quiet"]) == 2
    assert "unknown option 'stride': cover-stride takes keep, batch_size" in capsys.readouterr().err
    # a his4mae checkpoint is not a maester one
    assert main(["segment", str(volume), "--method", "maester", "--model", str(checkpoint), "-o",
                 str(tmp_path / "y.tif"), "--quiet"]) == 2


def test_the_paper_preset_trains_a_quarter_of_maesters_paper_budget():
    from orgaseg.methods.his4mae import TRAIN_PRESETS
    from orgaseg.methods.maester import TRAIN_PRESETS as MAESTER_PRESETS

    his4mae, maester = TRAIN_PRESETS["paper"], MAESTER_PRESETS["paper"]
    seen = his4mae.steps * his4mae.batch_size
    assert seen == pytest.approx(maester.steps * maester.batch_size / 4, abs=his4mae.batch_size)
