"""``orgaseg benchmark``: one method on one named dataset, every K, both matching modes.

The protocol of DESIGN.md: the dataset fixes training volumes, evaluation
volumes and reference classes. For each K one clusterer is fitted on a
feature sample pooled over the evaluation volumes (so that cluster ids mean
the same thing in all of them), every voxel is labelled block by block, and
the labels are scored against the reference on the fly (no label volume is
needed to score). Results: ``results.json``, ``results.md``, a confusion
matrix and an overlay per K.
"""

from __future__ import annotations

import json
import numbers
import resource
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from orgaseg import __version__
from orgaseg.datasets import Dataset, EvaluationItem, load_dataset
from orgaseg.environment import environment_record
from orgaseg.errors import OrgasegError, in_words
from orgaseg.evaluation import ConfusionAccumulator, EvaluationReport
from orgaseg.io import compute_normalization
from orgaseg.io.partial import output_folder, write_atomic
from orgaseg.io.volume import Volume
from orgaseg.methods.table import get_method
from orgaseg.options import check_whole_number
from orgaseg.pipeline.blocks import Region
from orgaseg.pipeline.cost import estimate_cost
from orgaseg.pipeline.runner import (
    FEATURE_CACHE_BYTES,
    Tee,
    fit_clusterers,
    label_volume,
    plan_blocks,
)
from orgaseg.pipeline.stages import resolve_pixel_size, resolve_specs, resolve_stages
from orgaseg.pipeline.tasks import VolumeSource, reusing_features
from orgaseg.progress import ProgressCallback
from orgaseg.viz import overlay_figure, plot_confusion

MODES = ("merge", "strict")


class ConfusionSink:
    """Scores labelled blocks against a reference volume as they are produced."""

    def __init__(self, reference: Volume, accumulator: ConfusionAccumulator) -> None:
        self.reference = reference
        self.accumulator = accumulator

    def write(self, region: Region, block: np.ndarray) -> None:
        self.accumulator.add(block, self.reference.read(region))


class SliceSink:
    """Keeps one z slice of the labels (for the overlay figure)."""

    def __init__(self, shape: tuple[int, int, int], z: int) -> None:
        self.z = z
        self.slice = np.zeros(shape[1:], dtype=np.uint32)

    def write(self, region: Region, block: np.ndarray) -> None:
        zs = region[0]
        if zs.start <= self.z < zs.stop:
            self.slice[region[1], region[2]] = block[self.z - zs.start]


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_k_range(text: str | int | Sequence[int]) -> list[int]:
    """``"4-10"`` -> [4, ..., 10]; ``"6"`` or ``6`` -> [6]; ``"4,6,8"`` or ``[4, 6, 8]`` -> [4, 6, 8]."""
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):
        ks = [int(text)]
    elif not isinstance(text, str):
        items = list(text) if isinstance(text, Iterable) else [text]
        if not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in items):  # int(2.5) was 2
            raise OrgasegError(f"K values must be positive integers, got {text!r}")
        ks = [int(k) for k in items]
    else:
        try:
            ks = []
            for part in text.split(","):
                if "-" in part:
                    low, high = (int(v) for v in part.split("-", 1))
                    ks.extend(range(low, high + 1))
                else:
                    ks.append(int(part))
        except ValueError:
            raise OrgasegError(f"cannot read K range {text!r}: use e.g. 4-10, 6 or 4,6,8") from None
    if not ks or min(ks) < 1:
        raise OrgasegError(f"K values must be positive integers, got {text!r}")
    return sorted(set(ks))


def run_benchmark(
    dataset: str | Dataset,
    method: str,
    output_dir: str | Path,
    *,
    ks: Sequence[int] = range(4, 11),
    data_root: str | Path | None = None,
    seed: int = 0,
    sample_size: int | None = None,
    features: str | None = None,
    clusterer: Any = None,
    options: dict | None = None,
    pixel_size: float | str | None = None,
    preset: str | None = None,
    model: str | Path | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> dict:
    """Benchmark ``method`` on ``dataset`` for every K; write results into ``output_dir``.

    Parameters
    ----------
    dataset : str or Dataset
        A dataset name (``vnc``, ``cdeep3m-mito``, ``betaseg``, ``cellmap``, ``phantom``) or a loaded dataset.
    method : str
        A row of the method table.
    output_dir : str or Path
        Folder for ``results.json``, ``results.md`` and the figures.
    ks : int, sequence of int or str
        Cluster counts: one, several, or a range as the command line writes it (``"4-10"``).
    data_root : path, optional
        Where the datasets live (default: ``../shared/data`` or ``ORGASEG_DATA_ROOT``).
    seed : int
        Seed of the samples, clusterings and training.
    sample_size : int, optional
        Voxels sampled (pooled over the evaluation volumes) to fit each
        clusterer (default: the method's rule for the pooled voxel count).
    features, clusterer, options
        Stage overrides, as :func:`orgaseg.segment`.
    pixel_size : float, "native" or None
        Working pixel size in nm for training and segmentation (None: the method's default).
    preset : str, optional
        Training preset, for methods that learn.
    model : path, optional
        A checkpoint to evaluate instead of training one (methods that learn).
    steps, minutes : optional
        Training budget (default: the preset's steps). Committed results train by ``steps``.
    device : str
        Where encoders train and run.
    progress : callable, optional
        Progress callback.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    seed = check_whole_number(seed, "seed")
    if sample_size is not None:
        sample_size = check_whole_number(sample_size, "sample_size", 1)
    row = get_method(method)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root)
    ks = parse_k_range(ks)
    output_dir = Path(output_dir)
    # the stages are checked before a training that can take hours, not after it
    resolve_specs(row, features=features, clusterer=clusterer, options=options)
    resolve_pixel_size(pixel_size, None)
    with output_folder(output_dir):
        checkpoint, training = _trained_model(row, data, output_dir, model=model, preset=preset, steps=steps,
                                              minutes=minutes, device=device, seed=seed, pixel_size=pixel_size,
                                              features=features, progress=progress)
        stages = resolve_stages(row, model=checkpoint, features=features, clusterer=clusterer, options=options,
                                pixel_size=pixel_size, device=device)

        started = time.perf_counter()
        items = data.evaluation
        jobs = [stages.job(VolumeSource(item.raw), compute_normalization(item.raw, seed=seed)) for item in items]
        n_voxels = sum(item.raw.size for item in items)
        if sample_size is None:
            sample_size = stages.sample_size(n_voxels)
        n_classes = len(data.classes)
        confusions = [ConfusionAccumulator(n_clusters=k, n_classes=n_classes) for k in ks]
        overlays = {}
        # said before the long part starts, as segment says it (each volume's share of the features kept)
        estimates = [estimate_cost(stages, job, plan_blocks(job), reuse_bytes=FEATURE_CACHE_BYTES // len(jobs))
                     for job in jobs]
        with reusing_features(jobs, FEATURE_CACHE_BYTES):  # the labelling reads the sampling pass's features
            clusterers = fit_clusterers(jobs, stages.clusterer, ks, options=stages.clusterer_options,
                                        sample_size=sample_size, seed=seed, progress=progress)
            fitted_s = time.perf_counter() - started
            for item, job in zip(items, jobs):
                z = item.raw.shape[0] // 2
                slices = [SliceSink(item.raw.shape, z) for _ in ks]
                sinks = [Tee(s, ConfusionSink(item.reference, c)) for s, c in zip(slices, confusions)]
                label_volume(job, clusterers, sinks, progress=progress)
                overlays[item.name] = (z, slices)
        wall = time.perf_counter() - started

        figures = output_dir / "figures"
        figures.mkdir(exist_ok=True)
        title = _run_title(row.name, stages.config())
        results = _score_each_k(ks, confusions, data, figures=figures, title=title)
        first = items[0]
        _draw_overlays(first, *overlays[first.name], ks, results, data.classes, figures=figures, title=title)

        record = {
            "dataset": data.name,
            "method": row.name,
            "preset": training.get("preset"),
            "stages": stages.config(),
            "pixel_size_nm": stages.pixel_size_nm,
            "options": options or {},
            "features": jobs[0].extractor.config(),
            "working_grids": [job.grid.describe() if job.grid is not None else None for job in jobs],
            "classes": list(data.classes),
            "background": list(data.background),
            "notes": list(data.notes),
            "evaluation_volumes": [{"name": it.name, "shape": list(it.raw.shape), "voxel_size": list(it.raw.voxel_size)} for it in items],
            "ks": ks,
            "seed": seed,
            "sample_size": sample_size,
            "training": training,
            "segmentation": {"wall_s": round(wall, 2), "fit_s": round(fitted_s, 2), "voxels": n_voxels,
                             "voxels_per_s": round(n_voxels / wall, 1),
                             "note": f"features computed once per block for all {len(ks)} K",
                             "cost_estimate": None if estimates[0] is None else estimates},
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "environment": environment_record(),
            "orgaseg_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": results,
        }
        record["machine"] = record["environment"]["machine"]
        write_atomic(output_dir / "results.json", json.dumps(record, indent=2))
        write_atomic(output_dir / "results.md", results_markdown(record))
        return record


def _score_each_k(ks: list[int], confusions: list[ConfusionAccumulator], data: Dataset, *, figures: Path,
                  title: str) -> dict[str, dict]:
    """The scores of each K (by ``str(K)``), scored as ``evaluate`` scores them (the same scores, and the same
    empty clusters and classes listed), with each K's confusion figure drawn into ``figures``."""
    results = {}
    for k, accumulator in zip(ks, confusions):
        confusion = accumulator.result()
        evaluation = EvaluationReport.from_confusion(confusion, classes=data.classes, background=data.background)
        report = {"k": k, "confusion": confusion.tolist(), "empty_classes": evaluation.empty_classes,
                  "empty_clusters": evaluation.empty_clusters, **evaluation.results}
        results[str(k)] = report
        mapping = {int(c): name for c, name in report["merge"]["mapping"].items()}
        plot_confusion(confusion, data.classes, mapping=mapping, path=figures / f"confusion_k{k}.png",
                       title=f"{title} on {data.name}, K = {k}")
    return results


def _draw_overlays(item: EvaluationItem, z: int, slices: list[SliceSink], ks: list[int], results: dict[str, dict],
                   classes, *, figures: Path, title: str) -> None:
    """Each K's labels of slice ``z`` of evaluation ``item`` over its raw slice and reference, into ``figures``."""
    raw_slice = item.raw.read((slice(z, z + 1), slice(None), slice(None)))[0]
    ref_slice = item.reference.read((slice(z, z + 1), slice(None), slice(None)))[0]
    for k, labels in zip(ks, slices):
        mapping = {int(c): name for c, name in results[str(k)]["merge"]["mapping"].items()}
        overlay_figure(raw_slice, labels.slice, ref_slice, path=figures / f"overlay_k{k}.png",
                       title=f"{title}, K = {k}, {item.name} z = {z}", class_names=list(classes),
                       mapping=mapping)


def _run_title(method: str, stages: dict) -> str:
    """``his4mae`` or ``his4mae (filter-bank, minibatch-kmeans, 18.4 nm)`` when stages differ from the method's."""
    row = get_method(method)
    extra = [stages["features"]] if stages["features"] != row.features else []
    extra += [stages["clusterer"]] if stages["clusterer"] != row.clusterer else []
    extra += [f"{stages['pixel_size_nm']:g} nm"] if stages["pixel_size_nm"] is not None else []
    return f"{method} ({', '.join(extra)})" if extra else method


def _named(name: str) -> str:
    """The argument ``name`` as a message names it: ``steps=`` to a Python caller, ``--steps`` on the command line."""
    return in_words(f"{name}=", f"--{name}")


def _trained_model(row, data: Dataset, output_dir: Path, *, model, preset, steps, minutes, device, seed, pixel_size,
                   features, progress):
    """The checkpoint to evaluate (trained now on the dataset's training volumes unless given) and its record."""
    needs_encoder = (features is None and row.learns) or (features is not None and _needs_encoder(features))
    training = [_named(name) for name, value in (("preset", preset), ("steps", steps), ("minutes", minutes))
                if value is not None]
    if not needs_encoder:
        if model is not None and row.trainer is not None:
            scored = in_words(f"orgaseg.segment(volume, method={row.name!r}, model=...) and orgaseg.evaluate",
                              "orgaseg segment --model and orgaseg evaluate")
            raise OrgasegError(f"benchmark fits {row.name!r} on each evaluation volume; a trained {row.name} clusterer "
                               f"({_named('model')}) is scored with {scored}")
        if model is not None:
            raise OrgasegError(f"method {row.name!r} with these features uses no encoder: "
                               f"it takes no {_named('model')}")
        if training:
            own_preset = in_words("options={'preset': NAME}", "--option preset=NAME")
            hint = (f" (the {row.name} clusterer's own preset: {own_preset})"
                    if row.trainer is not None else "")
            raise OrgasegError(f"{', '.join(training)} {'trains' if len(training) == 1 else 'train'} an encoder, and "
                               f"method {row.name!r} with these features has none{hint}")
        return None, {"preset": None, "wall_s": 0.0, "steps": 0, "note": "no encoder to train"}
    if model is not None and training:
        raise OrgasegError(f"{', '.join(training)} {'trains' if len(training) == 1 else 'train'} a new encoder, and "
                           f"{_named('model')} gives a trained one: pass one or the other")
    from orgaseg.models.checkpoint import file_hash, load_checkpoint

    if model is None:
        model = output_dir / "model.pt"
        started = time.perf_counter()
        row.train(data.train, model, preset=preset, steps=steps, minutes=minutes, overwrite=True, device=device,
                  seed=seed, pixel_size=pixel_size, progress=progress)
        note = f"trained by this benchmark in {time.perf_counter() - started:.0f} s"
    else:
        note = "checkpoint given with --model"
    record = load_checkpoint(model)
    return model, {
        "preset": record["preset"],
        "checkpoint": str(model),
        "sha256": file_hash(model),
        "method": record.get("method"),
        "pixel_size_nm": record.get("pixel_size_nm"),
        "wall_s": record["train_seconds"],
        "steps": record["step"],
        "total_steps": record["total_steps"],
        "batch_size": record["train_config"]["batch_size"],
        "final_loss": sum(record["losses"][-50:]) / max(1, len(record["losses"][-50:])),
        "device": record["device"],
        "training_volumes": [v["path"] for v in record["training_volumes"]],
        "note": note,
    }


def _needs_encoder(features: str) -> bool:
    from orgaseg.features import get_features

    return get_features(features).needs is not None


def results_markdown(record: dict) -> str:
    """Tables of per-class Dice, mean Dice and accuracy per K, one per mode."""
    classes = record["classes"]
    lines = [
        f"# {record['method']} on {record['dataset']}",
        "",
        f"Stages: {_stages_line(record)}; preset: {record['preset'] or '-'}; training: {_training_line(record['training'])}; "
        f"features: {_features_line(record['features'])}; seed {record['seed']}; sample {record['sample_size']} voxels; "
        f"segmentation {record['segmentation']['wall_s']} s for all K "
        f"({record['segmentation']['voxels_per_s']:.0f} voxels/s, features once per block); "
        f"peak memory {record['peak_memory_mb']:.0f} MiB; machine: {record['machine']['cpu']}, "
        f"{record['machine']['cores']} cores.",
    ]
    for note in record["notes"]:
        lines.append(f"Note: {note}")
    lines += _empty_notes(record)
    for mode in MODES:
        lines += ["", f"## {mode} mode", "",
                  "| K | " + " | ".join(classes) + " | mean Dice | mean organelle Dice | accuracy |",
                  "|---|" + "---|" * (len(classes) + 3)]
        for k in record["ks"]:
            scores = record["results"][str(k)][mode]
            per_class = [_fmt(scores["per_class"][c]["dice"] if scores["per_class"][c] else None) for c in classes]
            lines.append(f"| {k} | " + " | ".join(per_class) + f" | {_fmt(scores['mean_dice'])} | "
                         f"{_fmt(scores['mean_dice_organelles'])} | {_fmt(scores['accuracy'])} |")
    return "\n".join(lines) + "\n"


def _empty_notes(record: dict) -> list[str]:
    """A note per K with clusters on no counted voxel (a K curve would hide them), and one for empty classes."""
    notes = []
    for k in record["ks"]:
        empty = record["results"][str(k)].get("empty_clusters")  # absent from results written before
        if empty:
            notes.append(f"Note: at K = {k}, empty clusters {', '.join(map(str, empty))} (on no scored voxel, "
                         f"mapped to no class): in effect K = {k - len(empty)} here.")
    classes = record["results"][str(record["ks"][0])].get("empty_classes")
    if classes:
        notes.append(f"Note: no reference voxel of {', '.join(classes)}: not scored.")
    return notes


def _stages_line(record: dict) -> str:
    stages = record.get("stages")
    if not stages:
        return "-"
    pixel = "the native pixel size" if stages["pixel_size_nm"] is None else f"{stages['pixel_size_nm']:g} nm per pixel"
    return f"{stages['features']} + {stages['clusterer']} at {pixel}"


def _training_line(training: dict) -> str:
    if not training.get("steps"):
        return "none"
    return (f"{training['steps']} steps x {training['batch_size']} fields of view in {training['wall_s']:.0f} s on "
            f"{training['device']}, final loss {training['final_loss']:.3f}")


def _features_line(features: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in features.items() if key in ("kind", "mode", "keep", "stride", "scales_nm"))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
