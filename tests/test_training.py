"""Training samples, the learning-rate schedule, devices, checkpoints and exact resume."""

from pathlib import Path

import numpy as np
import pytest
import torch

from orgaseg.cli import main
from orgaseg.errors import OrgasegError
from orgaseg.io.volume import Volume
from orgaseg.methods import get_method
from orgaseg.models.checkpoint import load_checkpoint, save_checkpoint
from orgaseg.models.device import resolve_device
from orgaseg.models.encoder import load_encoder
from orgaseg.sampling import FieldOfViewBatches, FieldOfViewSampler
from orgaseg.synthetic import make_cell
from orgaseg.training import TrainConfig, learning_rate

MAESTER = get_method("maester")


class Identity:
    def apply(self, block):
        return block.astype(np.float32)


def _z_ramp(voxel_size, shape=(60, 90, 90)):
    data = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape).copy()
    return Volume(data, voxel_size=voxel_size)


def test_batches_are_seeded_by_step_and_shaped():
    sampler = FieldOfViewSampler([_z_ramp((10, 10, 10))], [Identity()], fov=80, seed=3)
    a, b = sampler.batch(5, 8), sampler.batch(5, 8)
    assert a.shape == (8, 1, 80, 80) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler.batch(6, 8))


def test_anisotropic_volumes_give_xy_planes_only():
    # values vary only along z: an xy field of view is constant, a zy or zx one is not
    aniso = FieldOfViewSampler([_z_ramp((50, 5, 5))], [Identity()], fov=40, crop_range=(40, 40), seed=0)
    iso = FieldOfViewSampler([_z_ramp((10, 10, 10))], [Identity()], fov=40, crop_range=(40, 40), seed=0)
    spread = lambda batch: (batch.amax(dim=(1, 2, 3)) - batch.amin(dim=(1, 2, 3)))
    assert torch.all(spread(aniso.batch(0, 64)) == 0)
    varying = (spread(iso.batch(0, 64)) > 0).float().mean()
    assert 0.4 < varying < 0.9  # about two planes in three are zy or zx


def test_volumes_are_chosen_in_proportion_to_size():
    small = Volume(np.zeros((1, 80, 80), np.float32), voxel_size=(50, 5, 5))
    large = Volume(np.ones((9, 80, 80), np.float32), voxel_size=(50, 5, 5))
    sampler = FieldOfViewSampler([small, large], [Identity(), Identity()], fov=80, augment=False)
    share = sampler.batch(0, 2000).mean().item()
    assert 0.86 < share < 0.94


def test_workers_draw_the_same_batches_as_the_main_process():
    sampler = FieldOfViewSampler([_z_ramp((10, 10, 10))], [Identity()], fov=40, seed=1)
    serial = list(torch.utils.data.DataLoader(FieldOfViewBatches(sampler, 4, 0, 6), batch_size=None))
    parallel = list(torch.utils.data.DataLoader(FieldOfViewBatches(sampler, 4, 0, 6), batch_size=None, num_workers=2))
    assert [s for s, _ in parallel] == list(range(6))
    for (_, a), (_, b) in zip(serial, parallel):
        assert torch.equal(a, b)


def test_learning_rate_warms_up_then_decays_to_min():
    config = TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10, steps=100)
    lrs = [learning_rate(s, 100, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert learning_rate(100, 100, config) == pytest.approx(1e-5)


@pytest.fixture(scope="module")
def phantom_volume():
    cell = make_cell((12, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=0)
    return Volume(cell.raw, voxel_size=cell.voxel_size, path="<phantom>")


def test_loss_falls_and_checkpoint_rebuilds_identical_features(phantom_volume, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    record = MAESTER.train([phantom_volume], ckpt, preset="tiny", steps=60, device="cpu")
    losses = record["losses"]
    assert len(losses) == 60 and record["step"] == 60
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    encoder = load_encoder(ckpt)
    assert encoder.record["preset"] == "tiny" and encoder.n_features == 32
    fovs = torch.rand(3, 1, 80, 80)
    with torch.inference_mode():
        assert torch.equal(encoder.encode(fovs), load_encoder(ckpt).encode(fovs))


def test_resume_continues_the_same_loss_curve(phantom_volume, tmp_path):
    straight = MAESTER.train([phantom_volume], tmp_path / "a.pt", preset="tiny", steps=24, device="cpu")
    with pytest.raises(KeyboardInterrupt) as raised:
        MAESTER.train([phantom_volume], tmp_path / "b.pt", preset="tiny", steps=24, device="cpu",
                      progress=_stop_after(12))
    # the command line prints the note in its last line, in its own words
    assert raised.value.__notes__ == [f"saved {tmp_path / 'b.pt'} at step 12 of 24; resume=True continues it"]
    assert raised.value.__notes__[0].for_command_line() == (f"saved {tmp_path / 'b.pt'} at step 12 of 24; "
                                                            "--resume (resume=True) continues it")
    resumed = MAESTER.train([phantom_volume], tmp_path / "b.pt", resume=True, device="cpu")
    assert resumed["step"] == 24
    np.testing.assert_allclose(resumed["losses"], straight["losses"], rtol=1e-5)


@pytest.mark.parametrize("seconds_per_step, steps", [(2.0, 30), (6.0, 10)])
def test_a_minutes_budget_sets_a_schedule_that_completes(phantom_volume, tmp_path, monkeypatch, seconds_per_step,
                                                         steps):
    # a clock that advances by the step's time at each training step: at 2 s a step, 20 steps are timed and
    # the minute fits 30; at 6 s a step, 20 would not fit in the minute: the schedule is fixed at once (10 fit)
    from orgaseg import training

    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock["now"])

    def tick(description, done, total, **figures):  # reported after a step: the clock the next step ends at
        clock["now"] = (done + 1) * seconds_per_step

    record = MAESTER.train([phantom_volume], tmp_path / "m.pt", preset="tiny", minutes=1, device="cpu", progress=tick)
    assert record["step"] == record["total_steps"] == steps  # the cosine ran to its end within the budget


@pytest.mark.parametrize("minutes", [None, 0.8])
def test_a_run_stopped_while_timing_its_budget_times_again_on_resume(phantom_volume, tmp_path, monkeypatch, minutes):
    # 2 s a step; stopped at step 5 (12 s on the clock), before the 20 timed steps fixed the schedule: the
    # resume times its next 20 steps (38 s) and fits 25 more in the 48 s left (given, or what was left of the
    # minute): the cosine ends at step 30 within the budget instead of heading for the preset's schedule
    from orgaseg import training

    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock["now"])

    def tick(description, done, total, *, stop=None, **figures):
        clock["now"] = (done + 1) * 2.0
        if stop is not None and done >= stop:
            raise KeyboardInterrupt

    totals = []
    with pytest.raises(KeyboardInterrupt) as raised:
        MAESTER.train([phantom_volume], tmp_path / "m.pt", preset="tiny", minutes=1, device="cpu",
                      progress=lambda *args, **figures: totals.append(args[2]) or tick(*args, stop=5, **figures))
    saved = load_checkpoint(tmp_path / "m.pt")
    assert saved["step"] == 5 and saved["timing_budget_minutes"] == 1
    # while timing, the bar and the last line count towards what the minute fits at 2 s a step (30), not
    # towards the preset's 300 steps (with 4,000 for the cpu preset the bar's end lay hours away)
    assert totals[1:] == [30] * 4
    note = f"saved {tmp_path / 'm.pt'} at step 5 of about 30 (the budget's schedule at the speed so far); "
    assert raised.value.__notes__ == [note + "resume=True continues it"]
    assert raised.value.__notes__[0].for_command_line() == note + "--resume (resume=True) continues it"
    resumed = MAESTER.train([phantom_volume], tmp_path / "m.pt", resume=True, minutes=minutes, device="cpu",
                            progress=tick)
    assert resumed["step"] == resumed["total_steps"] == 30 and resumed["timing_budget_minutes"] is None


def test_a_budget_that_ends_before_the_schedule_says_so(tmp_path, monkeypatch, capsys):
    # 2 s a step while the schedule is timed (the minute fits 31), then 6 s a step: the budget ends at step 24
    from orgaseg import training
    from orgaseg.cli import main

    cell = make_cell((12, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=0)
    np.save(tmp_path / "raw.npy", np.asarray(cell.raw))
    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock["now"])

    def step_time(done):
        return 2.0 if done < 20 else 6.0

    from orgaseg.progress import TqdmProgress

    report = TqdmProgress.__call__

    def tick(self, description, done, total, **figures):
        if description == "training":
            clock["now"] += step_time(done)
        return report(self, description, done, total, **figures)

    monkeypatch.setattr(TqdmProgress, "__call__", tick)
    assert main(["train", str(tmp_path / "raw.npy"), "--voxel-size", "20", "20", "20", "--method", "maester",
                 "--preset", "tiny", "--minutes", "1", "--device", "cpu", "-o", str(tmp_path / "m.pt"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "step 24 of 31" in out and "the 1-minute budget ended before the schedule" in out and "--resume" in out
    # asking a resume for fewer steps than were run says how many were
    assert main(["train", str(tmp_path / "raw.npy"), "--voxel-size", "20", "20", "20", "--method", "maester",
                 "--resume", "--steps", "20", "--device", "cpu", "-o", str(tmp_path / "m.pt"), "--quiet"]) == 2
    assert "the checkpoint is at step 24, past the 20 steps asked for: give --steps N above 24" in capsys.readouterr().err


def test_inputs_too_small_for_what_is_learned_are_warned_about(tmp_path):
    from orgaseg.errors import OrgasegWarning

    small = Volume(np.asarray(make_cell((4, 48, 48), voxel_size=(20.0, 20.0, 20.0), seed=0).raw),
                   voxel_size=(20.0, 20.0, 20.0), path="small")
    with pytest.warns(OrgasegWarning, match=r"small: its slices are 48 x 48 pixels .* smaller than one 80-pixel field"):
        MAESTER.train([small], tmp_path / "m.pt", preset="tiny", steps=1, device="cpu", pixel_size="native")
    with pytest.warns(OrgasegWarning, match=r"small: 4 x 48 x 48 voxels .* smaller than one 16-voxel patch along z: "
                                            r".*han-vae-2d is the variant for single sections"):
        get_method("han-vae").train([small], tmp_path / "h.pt", preset="tiny", steps=1, device="cpu",
                                    pixel_size="native")
    with pytest.warns(OrgasegWarning, match="5 snapshots asked of a schedule of 2 steps"):
        MAESTER.train([small], tmp_path / "s.pt", preset="tiny", steps=2, snapshots=5, device="cpu",
                      pixel_size="native")


def test_existing_checkpoint_needs_resume_or_overwrite(phantom_volume, tmp_path):
    ckpt = tmp_path / "c.pt"
    MAESTER.train([phantom_volume], ckpt, preset="tiny", steps=2, device="cpu")
    with pytest.raises(OrgasegError, match="pass resume=True to continue it or overwrite=True"):
        MAESTER.train([phantom_volume], ckpt, preset="tiny", steps=2, device="cpu")
    with pytest.raises(OrgasegError, match="already run"):
        MAESTER.train([phantom_volume], ckpt, resume=True, device="cpu")
    with pytest.raises(OrgasegError, match="preset"):
        MAESTER.train([phantom_volume], tmp_path / "d.pt", preset="huge", device="cpu")


def _stop_after(n):
    """A progress callback that interrupts training after n steps, like a killed run."""

    def progress(description, done, total, **figures):
        if description == "training" and done >= n:
            raise KeyboardInterrupt

    return progress


def test_device_names_resolve_by_one_rule(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device() == resolve_device("auto") == torch.device(expected)
    with pytest.raises(OrgasegError, match="unknown torch device 'gpu'; use auto, cpu or cuda"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(OrgasegError, match="no CUDA device"):
        resolve_device("cuda")


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"method": "maester", "step": 1})

    def failing_save(record, target):
        Path(target).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OrgasegError, match="model.pt: cannot write the output: disk full"):
        save_checkpoint(path, {"method": "maester", "step": 2})
    assert load_checkpoint(path, method="maester")["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("damage", ["no model_config", "missing weights", "other width", "unknown config field"])
def test_a_damaged_checkpoint_record_is_refused_naming_the_file(tmp_path, damage):
    from orgaseg.models.mae import MaskedAutoencoder, model_preset

    config = model_preset("tiny")
    record = {"method": "maester", "encoder": "mae", "model_config": config.to_dict(),
              "state_dict": MaskedAutoencoder(config).state_dict(), "pixel_size_nm": None}
    if damage == "no model_config":
        del record["model_config"]
    elif damage == "missing weights":
        record["state_dict"] = {k: v for k, v in record["state_dict"].items() if not k.startswith("decoder")}
    elif damage == "other width":
        record["model_config"] = {**record["model_config"], "embed_dim": 64}
    else:
        record["model_config"] = {**record["model_config"], "depth_of_field": 3}
    path = save_checkpoint(tmp_path / "damaged.pt", record)
    # an orgaseg checkpoint whose model cannot be rebuilt from it (edited, or of another version) is an
    # OrgasegError that names the file, not a KeyError or torch's RuntimeError (an 'unexpected error' on the
    # command line)
    with pytest.raises(OrgasegError, match=r"damaged\.pt: the checkpoint's maester model cannot be rebuilt"):
        load_encoder(path)


def test_a_checkpoint_of_a_newer_format_is_refused_saying_which_version_wrote_it(tmp_path):
    path = save_checkpoint(tmp_path / "new.pt", {"method": "maester", "format_version": 99, "package_version": "9.0"})
    with pytest.raises(OrgasegError, match=r"new\.pt was written by orgaseg 9\.0 in checkpoint format 99; this "
                                           r"orgaseg \(.+\) reads formats up to 1: upgrade orgaseg to read it"):
        load_checkpoint(path)


@pytest.mark.parametrize("method, arguments, message", [
    ("maester", {"steps": 0}, "steps must be a whole number >= 1, got 0"),
    ("han-vae-2d", {"steps": 2.5}, "steps must be a whole number >= 1, got 2.5"),
    ("maester", {"minutes": -1}, "minutes must be a positive number"),
    ("sccs", {"k": 2.5}, "K must be a whole number"),
    ("maester", {"seed": -1}, "seed=N must be a whole number >= 0, got -1"),  # was numpy's ValueError
    ("han-vae-2d", {"seed": 1.5}, "seed=N must be a whole number >= 0, got 1.5"),
])
def test_training_arguments_are_checked_before_any_work(tmp_path, method, arguments, message):
    import orgaseg

    with pytest.raises(OrgasegError, match=message):
        orgaseg.train(method, [np.zeros((2, 8, 8), np.float32)], tmp_path / "model.pt", preset="tiny", **arguments)
    assert not (tmp_path / "model.pt").exists()


def test_an_array_trains_like_a_volume(tmp_path):
    import orgaseg

    raw = make_cell((4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=0).raw
    record = orgaseg.train("maester", [raw], tmp_path / "model.pt", preset="tiny", steps=2, voxel_size=(20, 20, 20))
    assert record["step"] == 2 and (tmp_path / "model.pt").exists()


def test_one_volume_given_alone_trains_as_one_volume(tmp_path):
    """A path was read as its characters ('c: no such file') and an array as its sections, each a volume."""
    import tifffile

    import orgaseg

    raw = make_cell((4, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=0).raw
    tifffile.imwrite(tmp_path / "cell.tif", raw, imagej=True, metadata={"axes": "ZYX"})
    for name, inputs in (("path", str(tmp_path / "cell.tif")), ("array", raw)):
        record = orgaseg.train("maester", inputs, tmp_path / f"{name}.pt", preset="tiny", steps=1,
                               voxel_size=(20, 20, 20))
        assert [v["shape"] for v in record["training_volumes"]] == [[4, 64, 64]]


def test_a_resume_trains_on_the_volumes_at_the_voxel_size_the_checkpoint_recorded(tmp_path):
    import warnings

    from orgaseg.io import VoxelSizeWarning

    cell = make_cell((4, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=0)
    raw = tmp_path / "raw.npy"  # a format without voxel size: 1 nm is assumed unless given
    np.save(raw, np.asarray(cell.raw))
    ckpt = tmp_path / "m.pt"
    first = MAESTER.train([raw], ckpt, preset="tiny", steps=4, voxel_size=(20, 20, 20), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VoxelSizeWarning)
        resumed = MAESTER.train([raw], ckpt, resume=True, steps=6, device="cpu")  # as the README's resume line
        assert resumed["step"] == 6 and resumed["training_volumes"] == first["training_volumes"]
        assert resumed["training_volumes"][0]["voxel_size"] == [20.0, 20.0, 20.0]  # not an assumed 1 nm
        with pytest.raises(OrgasegError, match=r"trained on .*raw.npy at 20 x 20 x 20 nm.*reads it at 10 x 10 x 10 nm"):
            MAESTER.train([raw], ckpt, resume=True, steps=8, voxel_size=(10, 10, 10), device="cpu")
        np.save(tmp_path / "other.npy", np.asarray(cell.raw))
        with pytest.raises(OrgasegError, match="a resume trains on the same volumes"):
            MAESTER.train([tmp_path / "other.npy"], ckpt, resume=True, steps=8, device="cpu")


def test_a_resume_refuses_another_seed_or_pixel_size_and_keeps_its_normalisation(tmp_path, capsys):
    cell = make_cell((4, 96, 96), voxel_size=(10.0, 10.0, 10.0), seed=0)
    ckpt = tmp_path / "m.pt"
    first = MAESTER.train([cell.raw], ckpt, preset="tiny", steps=2, voxel_size=(10, 10, 10), device="cpu",
                          pixel_size=20, seed=3)
    # given again, the checkpoint's own values are accepted; other ones are refused, not ignored
    resumed = MAESTER.train([cell.raw], ckpt, resume=True, steps=3, voxel_size=(10, 10, 10), device="cpu",
                            pixel_size=20, seed=3)
    assert resumed["step"] == 3 and resumed["seed"] == 3 and resumed["pixel_size_nm"] == 20.0
    with pytest.raises(OrgasegError, match="was trained with seed 3, not 0: a resume continues the same run; leave "
                                           "seed=N out"):
        MAESTER.train([cell.raw], ckpt, resume=True, steps=4, voxel_size=(10, 10, 10), device="cpu", seed=0)
    with pytest.raises(OrgasegError, match="was trained at a working pixel size of 20 nm, not the volumes' own pixel size"):
        MAESTER.train([cell.raw], ckpt, resume=True, steps=4, voxel_size=(10, 10, 10), device="cpu",
                      pixel_size="native")
    # the normalisation the run started with goes on, whatever the volume's percentiles give now
    state = torch.load(ckpt, weights_only=False)
    state["normalizations"] = [{**state["normalizations"][0], "low": 1.0}]
    torch.save(state, ckpt)
    again = MAESTER.train([cell.raw], ckpt, resume=True, steps=4, voxel_size=(10, 10, 10), device="cpu")
    assert again["normalizations"][0]["low"] == 1.0 != first["normalizations"][0]["low"]
    # on the command line --seed has no default to compare: left out, a resume takes the checkpoint's
    raw = tmp_path / "raw.npy"
    np.save(raw, np.asarray(cell.raw))
    assert main(["train", str(raw), "--voxel-size", "10", "10", "10", "--method", "maester", "--preset", "tiny",
                 "--steps", "2", "--seed", "3", "-o", str(tmp_path / "c.pt"), "--quiet"]) == 0
    assert main(["train", str(raw), "--method", "maester", "--resume", "--steps", "3", "-o", str(tmp_path / "c.pt"),
                 "--quiet"]) == 0
    assert main(["train", str(raw), "--method", "maester", "--resume", "--steps", "4", "--seed", "0", "-o",
                 str(tmp_path / "c.pt"), "--quiet"]) == 2
    assert "was trained with seed 3, not 0" in capsys.readouterr().err


def test_a_resume_finds_its_volumes_from_another_working_directory(tmp_path, monkeypatch):
    # the checkpoint records where its volumes are, not where they were seen from
    cell = make_cell((4, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=0)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "raw.npy", np.asarray(cell.raw))
    monkeypatch.chdir(tmp_path)
    first = MAESTER.train(["data/raw.npy"], "m.pt", preset="tiny", steps=2, voxel_size=(20, 20, 20), device="cpu")
    assert first["training_volumes"][0]["path"] == str(tmp_path / "data" / "raw.npy")
    monkeypatch.chdir(tmp_path / "data")
    resumed = MAESTER.train(["raw.npy"], "../m.pt", resume=True, steps=3, voxel_size=(20, 20, 20), device="cpu")
    assert resumed["step"] == 3


def test_train_reads_a_channel_and_a_resume_reads_the_same_one(tmp_path, capsys):
    import tifffile

    from orgaseg.cli import main

    cell = make_cell((4, 96, 96), voxel_size=(20.0, 20.0, 20.0), seed=0)
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.stack([cell.raw.max() - cell.raw, cell.raw], axis=1), imagej=True, resolution=(50.0, 50.0),
                     metadata={"spacing": 0.02, "unit": "um", "axes": "ZCYX"})
    ckpt = tmp_path / "m.pt"
    train = ["train", str(raw), "--method", "maester", "--device", "cpu", "-o", str(ckpt), "--quiet"]
    assert main([*train, "--preset", "tiny", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "data has 2 channels" in err and "pass --channel N" in err and "not an option" not in err
    assert main([*train, "--preset", "tiny", "--steps", "2", "--channel", "1"]) == 0
    recorded = load_checkpoint(ckpt, method="maester")["training_volumes"][0]
    assert recorded["channel"] == 1 and recorded["shape"] == [4, 96, 96]
    assert main([*train, "--resume", "--steps", "3", "--channel", "0"]) == 2
    assert "channel 1" in capsys.readouterr().err
    assert main([*train, "--resume", "--steps", "3", "--channel", "1"]) == 0
    assert load_checkpoint(ckpt, method="maester")["step"] == 3
