"""The ``orgaseg`` command line.

Exit codes: 0 on success, 2 on bad input (a one-line message naming the
problem; ``--debug`` shows the traceback), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

from orgaseg import __version__
from orgaseg.errors import OrgasegError, OrgasegWarning
from orgaseg.progress import TqdmLogHandler, TqdmProgress


class _UsageError(OrgasegError):
    """A command line argparse refused."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, ``kill``), handled as Ctrl-C is: the run keeps its finished work,
    releases its lock and says how to resume."""


def _terminate(signum, frame):
    raise _Terminated


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``orgaseg segment: error: ...``, exit 2, no usage dump."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}")


def _table_choice(table: str, learned_only: bool = False):
    """An argparse type that checks a name against one of the stage tables, with a clear message."""

    def check(name: str) -> str:
        if table == "method":
            from orgaseg.methods import METHODS as entries
        elif table == "features":
            from orgaseg.features import FEATURES as entries
        else:
            from orgaseg.cluster import CLUSTERERS as entries
        learned = [n for n, m in entries.items() if learned_only and m.trains]
        if name not in entries:
            from orgaseg.cluster import CLUSTERERS

            if learned_only and name in CLUSTERERS:  # cs2c-spa is a way to label with a trained cs2c
                raise argparse.ArgumentTypeError(f"{name!r} is a clusterer, not a method; methods that learn: "
                                                 f"{', '.join(learned)} (cs2c trains what --clusterer cs2c-spa uses)")
            raise argparse.ArgumentTypeError(f"unknown {table} {name!r}; choose one of "
                                             f"{', '.join(learned or entries)}")
        if learned_only and not entries[name].trains:
            raise argparse.ArgumentTypeError(f"method {name!r} does not learn, there is nothing to train; "
                                             f"methods that learn: {', '.join(learned)}")
        return name

    check.__name__ = table
    return check


def _voxel_size(values):
    if values is None:
        return None
    if any(v <= 0 for v in values):
        raise OrgasegError(f"--voxel-size must be three positive numbers (z y x nm), got {' '.join(map(str, values))}")
    return tuple(values)


def cmd_info(args, progress) -> int:
    from orgaseg.io import open_volume, sample_intensities
    from orgaseg.io.metadata import MAX_EM_PIXEL_NM, format_sizes, micrometre_hint
    from orgaseg.io.normalize import finite_percentiles
    from orgaseg.io.readers import pyramid_levels

    volume = open_volume(args.path, key=args.key, voxel_size=_voxel_size(args.voxel_size), level=args.level,
                         axes=args.axes, channel=args.channel, strict_chunks=args.strict_chunks)
    low, robust_low, robust_high, high = finite_percentiles(sample_intensities(volume), [0.0, 0.5, 99.5, 100.0],
                                                            volume.path)
    print(f"path:        {volume.path}" + (f" (key {volume.key})" if volume.key else ""))
    print(f"shape:       {' x '.join(map(str, volume.shape))} (axes {volume.axes})")
    print(f"dtype:       {volume.dtype}")
    if volume.attrs.get("voxel_size_assumed"):
        print("voxel size:  unknown (no metadata; taken as 1 x 1 x 1 nm: pass --voxel-size Z Y X)")
    else:
        print(f"voxel size:  {format_sizes(volume.voxel_size)} nm (z y x)"
              + ("  [anisotropic: in-plane features]" if volume.is_anisotropic() else ""))
        if min(volume.voxel_size[1:]) >= MAX_EM_PIXEL_NM:  # said before segment refuses or misreads it
            warnings.warn(OrgasegWarning(
                f"{volume.path}: pixels of {format_sizes(volume.voxel_size[1:])} nm (y x) are coarser than an electron "
                f"microscope's ({MAX_EM_PIXEL_NM / 1000:g} um or more): {micrometre_hint()}"), stacklevel=1)
    guessed = volume.attrs.get("voxel_size_assumed")  # sizes and places in nm are then in voxels (1 nm each)
    if any(volume.origin):
        print(f"origin:      {format_sizes(volume.origin)} {'voxels' if guessed else 'nm'} (z y x; where the first "
              "voxel lies)")
    elif volume.attrs.get("unread_place"):  # said, as a user placing outputs by it would be misled
        print(f"origin:      not read: {volume.attrs['unread_place']}; outputs and measurements start at 0")
    print(f"chunks:      {' x '.join(map(str, volume.chunks)) if volume.chunks else 'not chunked'}")
    levels = pyramid_levels(args.path, volume)
    if len(levels) > 1:  # --level reads another
        print(f"levels:      {len(levels)} (--level N): " + "; ".join(
            f"{n}: {' x '.join(map(str, level.shape))}" + ("" if guessed else f" at {format_sizes(level.voxel_size)} nm")
            for n, level in enumerate(levels)))
    print(f"size:        {volume.size:,} voxels, {volume.nbytes / 2**20:,.1f} MiB")
    print(f"intensity:   {low:g} .. {high:g} (0.5-99.5 percentile {robust_low:g} .. {robust_high:g}; sampled)")
    return 0


def cmd_crop(args, progress) -> int:
    from orgaseg.io import open_volume
    from orgaseg.io.crop import crop_volume, output_format, parse_region
    from orgaseg.io.metadata import format_sizes

    output_format(args.output)  # an unknown suffix is refused before the source is opened
    volume = open_volume(args.path, key=args.key, voxel_size=_voxel_size(args.voxel_size), level=args.level,
                         axes=args.axes, channel=args.channel, strict_chunks=args.strict_chunks)
    region = parse_region(args.region, volume.shape)
    path = crop_volume(volume, region, args.output, overwrite=args.overwrite, progress=progress)
    shape = " x ".join(str(r.stop - r.start) for r in region)
    print(f"wrote {path}: {shape} voxels from {volume.path}, region "
          + " ".join(f"{r.start}:{r.stop}" for r in region)
          + " (z y x), voxel size " + ("unknown" if volume.attrs.get("voxel_size_assumed")
                                         else f"{format_sizes(volume.voxel_size)} nm"))
    return 0


def cmd_segment(args, progress) -> int:
    from orgaseg.pipeline.executors import make_executor
    from orgaseg.segmentation import segment

    started = time.time()
    executor = make_executor(args.executor, workers=args.workers, threads_per_worker=args.threads_per_worker,
                             scheduler=args.scheduler)
    try:
        result = segment(
            args.path,
            k=args.k,
            output=args.output,
            method=args.method,
            model=args.model,
            centers=args.centers,
            features=args.features,
            clusterer=args.clusterer,
            options=_stage_options(args),
            pixel_size=args.pixel_size,
            invert=args.invert,
            voxel_size=_voxel_size(args.voxel_size),
            key=args.key,
            level=args.level,
            axes=args.axes,
            channel=args.channel,
            strict_chunks=args.strict_chunks,
            seed=args.seed,
            sample_size=args.sample_size,
            block_shape=tuple(args.block_shape) if args.block_shape else None,
            device=args.device,
            overwrite=args.overwrite,
            executor=executor,
            save_features=args.save_features,
            feature_memory=args.feature_memory,
            progress=progress,
        )
    finally:
        executor.close()
    blocks = result.provenance["blocks"]
    resumed = f", resumed: {blocks['skipped']} of {blocks['blocks']} blocks were done" if blocks.get("skipped") else ""
    print(f"wrote {result.path} (K = {result.model.k}, {time.time() - started:.1f} s{resumed}); "
          f"provenance in {result.path}.provenance.json")
    counts = result.provenance.get("label_voxels")
    if counts and len(counts) <= 32:  # beyond that a line per run says little
        total = sum(counts)
        print("share of the voxels per cluster: " + ", ".join(f"{i} {100 * n / total:.1f}%"
                                                              for i, n in enumerate(counts)))
    return 0


def cmd_train(args, progress) -> int:
    from orgaseg.io import open_volume
    from orgaseg.methods import get_method
    from orgaseg.options import parse_assignments

    spec = get_method(args.method)
    clusterer_arguments = {name: value for name, value in (("k", args.k), ("encoder", args.encoder),
                                                           ("features", args.features), ("graphs", args.graphs))
                           if value is not None}
    if clusterer_arguments and spec.learns:
        given = ", ".join("-k" if name == "k" else f"--{name}" for name in clusterer_arguments)
        raise OrgasegError(f"{given}: for methods that train a clusterer (sccs, cs2c); {spec.name} trains an encoder")
    with warnings.catch_warnings():
        if args.resume:  # a volume without voxel-size metadata takes the one the checkpoint was trained at
            from orgaseg.io import VoxelSizeWarning

            warnings.simplefilter("ignore", VoxelSizeWarning)
        volumes = [open_volume(path, key=args.key, voxel_size=_voxel_size(args.voxel_size), level=args.level,
                               axes=args.axes, channel=args.channel, strict_chunks=args.strict_chunks)
                   for path in args.paths]
        record = spec.train(volumes, args.output, preset=args.preset, steps=args.steps, minutes=args.minutes,
                            resume=args.resume, overwrite=args.overwrite, device=args.device, seed=args.seed,
                            workers=args.workers, snapshots=args.snapshots, progress=progress, pixel_size=args.pixel_size,
                            model_options=parse_assignments(args.model_option, "--model-option"),
                            **clusterer_arguments)
    losses = record.get("losses")
    # one step's loss swings (a graph clusterer's from graph to graph): means of the first and last tenth say more
    window = max(1, min(10, len(losses or ()) // 10))
    loss = (f"loss {sum(losses[:window]) / window:.4f} -> {sum(losses[-window:]) / window:.4f}"
            + (f" (means of the first and last {window} steps)" if window > 1 else "")
            if losses else f"final loss {record['final_loss']:.4f}")
    progress.close()  # the bar's last state above the summary, not below it
    print(f"wrote {args.output}: {args.method} preset {record['preset']}, step {record['step']} of "
          f"{record['total_steps']}, {loss}, {record['train_seconds']:.0f} s on {record['device']}")
    if record.get("step", 0) < record.get("total_steps", 0) and args.minutes is not None:
        print(f"the {args.minutes:g}-minute budget ended before the schedule (the steps ran slower than the first ones "
              "timed): the learning rate had not decayed to its end; --resume continues it")
    return 0


def _class_map(args):
    """The class map of --class-map or --dataset (None without either)."""
    if args.dataset is None:
        return args.class_map
    from orgaseg.datasets import CLASS_MAPS

    if args.class_map is not None:
        raise OrgasegError("give --class-map or --dataset, not both")
    if args.dataset not in CLASS_MAPS:
        raise OrgasegError(f"no class map for dataset {args.dataset!r}; datasets with one: {', '.join(CLASS_MAPS)}")
    return CLASS_MAPS[args.dataset]


def cmd_evaluate(args, progress) -> int:
    from orgaseg.evaluation import evaluate
    from orgaseg.evaluation.classmap import reference_classes
    from orgaseg.evaluation.report import check_report_folder
    from orgaseg.io import VoxelSizeWarning, open_volume
    from orgaseg.viz import overlay_figure

    class_map = _class_map(args)
    check_report_folder(args.output, overwrite=args.overwrite)  # before the long work
    with warnings.catch_warnings():
        # scores count voxels: the voxel size of label volumes plays no part
        warnings.simplefilter("ignore", VoxelSizeWarning)
        pred = open_volume(args.prediction, key=args.key)
        reference = _open_with_key_option(args.reference, args.reference_key, "reference_key")
        mask = _open_with_key_option(args.mask, args.mask_key, "mask_key") if args.mask else None
        raw = _open_raw_as_segmented(args.raw, args.raw_key, pred) if args.raw else None  # before anything is written
    if raw is not None and raw.shape != pred.shape:
        raise OrgasegError(f"{args.raw}: the raw volume has shape {raw.shape}, the prediction {pred.shape}: the "
                           "overlay needs the volume the prediction was made from")
    if args.dataset is not None:
        from orgaseg.datasets import check_reference_values

        check_reference_values(reference, args.dataset)
    from orgaseg.organelles import read_label_names

    label_names = None
    named = read_label_names(pred)
    if args.mode == "names":
        if named is None:
            raise OrgasegError(f"{args.prediction}: --mode names scores a named volume by its names, and this one "
                               "carries none (orgaseg name writes them)")
        label_names = [named.get(value, "") for value in range(max(named) + 1)]
    elif named is not None:  # its ids are names, which merge or strict mode would match to classes anew
        warnings.warn(OrgasegWarning(f"{args.prediction} is a named volume ({', '.join(named.values())}): "
                                     "--mode names scores it by its names, as named"), stacklevel=2)
    report = evaluate(pred, reference, classes=args.classes, class_map=class_map, background=args.background,
                      mask=mask, ignore=args.ignore, mode=args.mode, label_names=label_names, progress=progress)
    paths = report.save(args.output, overwrite=args.overwrite)
    if raw is not None:
        z = raw.shape[0] // 2
        region = (slice(z, z + 1), slice(None), slice(None))
        mapping = None
        results = report.to_dict()
        shown = next((mode for mode in ("names", "merge") if mode in results), None)
        if shown is not None:
            mapping = {int(c): name for c, name in results[shown]["mapping"].items()}
        classes = reference_classes(reference.read(region)[0], class_map=class_map, ignore=args.ignore,
                                    mask=None if mask is None else mask.read(region)[0])
        paths["overlay"] = overlay_figure(raw.read(region)[0], pred.read(region)[0], classes,
                                          path=Path(args.output) / "overlay.png", class_names=report.classes,
                                          mapping=mapping, title=f"z = {z}")
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _open_raw_as_segmented(path, key, prediction):
    """evaluate's ``--raw``: the file the prediction was segmented from is read as ``segment`` read it (its
    channel, axis order and key), any other file as it comes."""
    from orgaseg.errors import with_key_option
    from orgaseg.io import open_volume
    from orgaseg.io.provenance import label_command, read_provenance

    source = None
    try:
        record = read_provenance(prediction.path) if prediction.path else None
        if label_command(record) == "name":  # named labels: the segmentation they name says what was read
            record = read_provenance(record["segmentation"])
        if label_command(record) == "segment":
            source = record.get("input")
    except (OrgasegError, KeyError, TypeError):
        source = None
    layout = {n: source[n] for n in ("axes", "channel") if source and source.get(n) is not None}
    if layout and Path(str(source.get("path"))).resolve() == Path(path).resolve():
        try:
            return open_volume(path, key=key if key is not None else source.get("key"), **layout)
        except OrgasegError as err:
            raise with_key_option(err, "raw_key") from None
    return _open_with_key_option(path, key, "raw_key")


def _open_with_key_option(path, key, option: str):
    """``open_volume(path, key=key)``; a message asking for a key names ``option``, this input's own."""
    from orgaseg.errors import with_key_option
    from orgaseg.io import open_volume

    try:
        return open_volume(path, key=key)
    except OrgasegError as err:
        raise with_key_option(err, option) from None


def cmd_inspect(args, progress) -> int:
    from orgaseg.io import open_volume
    from orgaseg.viz.inspect import inspect_model

    volume = open_volume(args.volume, key=args.key, voxel_size=_voxel_size(args.voxel_size), level=args.level,
                         axes=args.axes, channel=args.channel, strict_chunks=args.strict_chunks)
    reference = None
    if args.reference_key is not None and not args.reference:
        raise OrgasegError("--reference-key names a dataset inside the container of --reference: give that too")
    if args.reference:
        from orgaseg.io import VoxelSizeWarning

        with warnings.catch_warnings():  # the reference only labels the volume's tokens: its voxel size is not read
            warnings.simplefilter("ignore", VoxelSizeWarning)
            reference = _open_with_key_option(args.reference, args.reference_key, "reference_key")
    if reference is not None and reference.shape != volume.shape:
        raise OrgasegError(f"reference shape {reference.shape} differs from the volume's {volume.shape}")
    if reference is not None and args.dataset is not None:
        from orgaseg.datasets import check_reference_values

        check_reference_values(reference, args.dataset)
    paths = inspect_model(args.checkpoint, volume, args.output, reference=reference, class_names=args.classes,
                          class_map=_class_map(args),
                          k=args.k, seed=args.seed, device=args.device, pixel_size=args.pixel_size,
                          overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_benchmark(args, progress) -> int:
    from orgaseg.benchmark import parse_k_range, run_benchmark

    output = Path(args.output)
    if (output / "results.json").exists() and not args.overwrite:
        raise OrgasegError(f"{output / 'results.json'} exists; pass --overwrite to replace it")
    record = run_benchmark(args.dataset, args.method, output, ks=parse_k_range(args.k), data_root=args.data_root,
                           seed=args.seed, sample_size=args.sample_size, features=args.features,
                           clusterer=args.clusterer, options=_stage_options(args), pixel_size=args.pixel_size,
                           preset=args.preset, model=args.model, steps=args.steps, minutes=args.minutes,
                           device=args.device, progress=progress)
    print((output / "results.md").read_text())
    print(f"wrote {output / 'results.json'}, {output / 'results.md'} and {output / 'figures'}/ "
          f"(segmentation {record['segmentation']['wall_s']} s for all K)")
    return 0


def cmd_name(args, progress) -> int:
    from orgaseg.organelles import name_clusters

    if args.names is not None and args.scribbles is None:
        raise OrgasegError("--names goes with --scribbles (points carry their names in the 'name' column)")
    from orgaseg.pipeline.executors import make_executor

    from orgaseg.organelles.naming import mapping_holds_classifier

    asked = (args.executor, args.scheduler, args.workers, args.threads_per_worker) != (None, None, 1, 1)
    if asked and not (args.refine or mapping_holds_classifier(args.mapping)):
        raise OrgasegError("--workers, --threads-per-worker, --executor and --scheduler take effect only with "
                           "--refine or a refined --mapping (naming alone relabels the clusters in one pass here)")
    executor = make_executor(args.executor, workers=args.workers, threads_per_worker=args.threads_per_worker,
                             scheduler=args.scheduler) if asked else None
    try:
        result = name_clusters(args.segmentation, points=args.points, scribbles=args.scribbles,
                               scribbles_key=args.scribbles_key, names=args.names, mapping=args.mapping,
                               output=args.output, units=args.units, refine=args.refine, classifier=args.classifier,
                               prior=args.prior, context=args.context, z_context=args.z_context, raw=args.raw,
                               raw_key=args.raw_key,
                               model=args.model, device=args.device, seed=args.seed, overwrite=args.overwrite,
                               executor=executor, feature_memory=args.feature_memory, progress=progress)
    finally:
        if executor is not None:
            executor.close()
    refined = (f", refined by a {result.classifier.kind} classifier" if result.classifier is not None else "")
    print(f"wrote {result.path} ({len(result.names) - 1} names{refined}); provenance in "
          f"{result.path}.provenance.json")
    if args.mapping is not None:  # the votes behind the mapping are another volume's: not said as this one's
        print(f"cluster names, as {args.mapping} gives them: "
              f"{result.naming.summary(refined=result.classifier is not None, votes=False)}")
    else:
        said = "cluster vote (the labels are the refining classifier's)" if result.classifier else "cluster vote"
        print(f"{said}: {result.naming.summary(refined=result.classifier is not None)}")
    return 0


def cmd_demo(args, progress) -> int:
    from orgaseg.demo import run_demo

    started = time.time()
    paths = run_demo(args.output, shape=tuple(args.shape), overwrite=args.overwrite, progress=progress)
    report = json.loads(Path(paths["report json"]).read_text())
    merge = report["merge"]
    dice = ", ".join(f"{name} {scores['dice']:.2f}" if scores["dice"] is not None else f"{name} absent"
                     for name, scores in merge["per_class"].items())
    outside = report.get("empty_clusters") or []
    unscored = (f"; cluster{'s' if len(outside) > 1 else ''} {', '.join(map(str, outside))} lie{'' if len(outside) > 1 else 's'} "
                "outside the cell, which is not scored") if outside else ""
    print(f"demo finished in {time.time() - started:.0f} s: mean Dice {merge['mean_dice']:.3f} against the phantom's "
          f"reference ({dice}; merge mode, see report/report.md{unscored}); outputs in {args.output}:")
    width = max(len(name) for name in paths)
    for name, path in paths.items():
        print(f"  {name:<{width}}  {path}")
    return 0


def cmd_instances(args, progress) -> int:
    from orgaseg.organelles.instances import make_instances
    from orgaseg.pipeline.executors import make_executor

    executor = make_executor(args.executor, workers=args.workers, threads_per_worker=args.threads_per_worker,
                             scheduler=args.scheduler)
    try:
        result = make_instances(args.named, args.output, classes=args.classes, min_size_nm3=args.min_size_nm3,
                                min_size_nm2=args.min_size_nm2,
                                fill_holes=args.fill_holes, majority_nm=args.majority, connectivity=args.connectivity,
                                voxel_size=_voxel_size(args.voxel_size), key=args.key,
                                block_shape=tuple(args.block_shape) if args.block_shape else None,
                                executor=executor, overwrite=args.overwrite, progress=progress)
    finally:
        executor.close()
    # a volume without names numbers its classes by value: "class 2: 7", not "2 7"
    counts = ", ".join(f"{'class ' * name.isdigit()}{name}: {count}" for name, count in result.counts.items()) or "none"
    skipped = result.provenance.get("blocks_resumed", {}).get("skipped")
    resumed = f", resumed: {skipped} of {result.provenance['blocks']} blocks were done" if skipped else ""
    print(f"wrote {result.path}: {len(result.classes)} instances ({counts}), {result.provenance['seconds']:.1f} s"
          f"{resumed}; provenance in {result.path}.provenance.json")
    return 0


def cmd_measure(args, progress) -> int:
    from orgaseg.io.readers import existing_path
    from orgaseg.organelles.measure import check_table_path, measure_instances, write_table
    from orgaseg.pipeline.executors import make_executor

    for path in (args.instances, args.raw, args.mask):
        if path is not None:
            existing_path(path)  # a missing input is the first thing to say
    if args.summary is not None and Path(args.summary).resolve() == Path(args.output).resolve():
        raise OrgasegError(f"{args.summary}: the summary needs a path of its own, not the table's (-o)")
    for path in (args.output, args.summary):
        if path is not None:
            check_table_path(path, overwrite=args.overwrite)  # before the long work
    executor = make_executor(args.executor, workers=args.workers, threads_per_worker=args.threads_per_worker,
                             scheduler=args.scheduler)
    try:
        result = measure_instances(args.instances, raw=args.raw, mask=args.mask, key=args.key, raw_key=args.raw_key,
                                   mask_key=args.mask_key, voxel_size=_voxel_size(args.voxel_size),
                                   block_shape=tuple(args.block_shape) if args.block_shape else None,
                                   executor=executor, progress=progress)
    finally:
        executor.close()
    written = [write_table(result.table, args.output, overwrite=args.overwrite)]
    if args.summary:
        written.append(write_table(result.summary, args.summary, overwrite=args.overwrite))
    for row in zip(*result.summary.values()):
        line = dict(zip(result.summary, row))
        if not line["count"]:  # a class numbered without an instance: no sizes to say
            print(f"{line['class']}: 0 instances")
            continue
        # the fraction counts the voxels inside the mask only, the total all of them: both said (a single image:
        # areas in um^2, a volume: volumes in um^3)
        size, unit = ("area", "um2") if "total_area_um2" in line else ("volume", "um3")
        shown = unit.replace("um", "um^")
        fraction = (f", {100 * line[f'{size}_fraction']:.2f}% of the cell "
                    f"({line[f'{size}_fraction'] * line[f'cell_{size}_{unit}']:.4g} {shown} inside it)"
                    if f"{size}_fraction" in line else "")
        print(f"{line['class']}: {line['count']} instances, median {line[f'median_{size}_{unit}']:.4g} {shown}, "
              f"total {line[f'total_{size}_{unit}']:.4g} {shown}{fraction}")
    print(f"wrote {', '.join(map(str, written))} ({result.provenance['seconds']:.1f} s)")
    return 0


def cmd_methods(args, progress) -> int:
    from orgaseg.cluster import CLUSTERERS
    from orgaseg.features import FEATURES
    from orgaseg.methods import METHODS
    from orgaseg.models.encoder import ENCODERS

    print("methods (--method): encoder + dense features + clusterer, default working pixel size, training presets")
    for method in METHODS.values():
        pixel = "native" if method.pixel_size_nm is None else f"{method.pixel_size_nm:g} nm (finer inputs only)"
        presets = ", ".join(method.presets) or "-"
        print(f"  {method.name:<11} {method.encoder or '-'} + {method.features} + {method.clusterer}; "
              f"pixel size {pixel}; presets {presets}")
        print(f"  {'':<11} {method.summary} [{method.paper}]")
    print("\nencoders (from the checkpoint, 'orgaseg train'):")
    for spec in ENCODERS.values():
        print(f"  {spec.name:<17} {spec.kind:<10} {spec.summary}")
    print("\ndense features (--features; options with --option NAME=VALUE):")
    for spec in FEATURES.values():
        needs = f"needs a {spec.needs} encoder" if spec.needs else "no encoder"
        print(f"  {spec.name:<17} {needs}: {spec.summary}")
        for name, text in spec.options.items():
            print(f"  {'':<19}{name}: {text}")
    print("\nclusterers (--clusterer; options with --option NAME=VALUE):")
    for spec in CLUSTERERS.values():
        print(f"  {spec.name:<17} {spec.summary} (default sample {spec.default_sample_size:,} voxels)")
        for name, text in spec.options.items():
            print(f"  {'':<19}{name}: {text}")
    return 0


def _stage_options(args) -> dict | None:
    """``--option NAME=VALUE`` items, with the shortcuts ``--keep``, ``--stride`` and ``--scales-nm``."""
    from orgaseg.options import parse_assignments

    options = parse_assignments(args.option, "--option")
    for name in ("keep", "stride", "scales_nm"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = list(value) if isinstance(value, list) else value
    return options or None


def _default_sample_sizes() -> str:
    """Each clusterer's default sample, from the table: clusterers that share one are listed together."""
    from orgaseg.cluster import CLUSTERERS

    by_size: dict[int, list[str]] = {}
    for name, spec in CLUSTERERS.items():
        by_size.setdefault(spec.default_sample_size, []).append(name)
    return ", ".join(f"{' / '.join(names)} {size:,}" for size, names in by_size.items())


def _add_stage_options(parser: argparse.ArgumentParser, reused: bool = False) -> None:
    """Stage choices, read from the tables: shared by segment and benchmark (``reused``: segment, whose
    method may come from the clusterer it reuses)."""
    from orgaseg.cluster import CLUSTERERS
    from orgaseg.features import FEATURES
    from orgaseg.methods import METHODS

    default = ("default baseline, or the method of the run --centers or a trained sccs / cs2c --model comes from"
               if reused else "default baseline")
    parser.add_argument("--method", default=None if reused else "baseline", type=_table_choice("method"),
                        metavar="NAME",
                        help=f"segmentation method: {', '.join(METHODS)} ({default}; 'orgaseg methods' lists them)")
    parser.add_argument("--features", type=_table_choice("features"), metavar="NAME",
                        help=f"dense features instead of the method's: {', '.join(FEATURES)}")
    parser.add_argument("--clusterer", type=_table_choice("clusterer"), metavar="NAME",
                        help=f"clusterer instead of the method's: {', '.join(CLUSTERERS)}")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a stage option, e.g. stride=20, scales_nm=[10,20,40], n_init=5 (repeatable; "
                             "'orgaseg methods' lists them; features.NAME / clusterer.NAME when ambiguous)")
    parser.add_argument("--keep", type=int, help="shortcut for --option keep=M (cover-stride: central tokens kept per side)")
    parser.add_argument("--stride", type=int, help="shortcut for --option stride=S (expand-stride: pixels between fields of view; "
                        "voxel-latents: pixels between encoded patches)")
    parser.add_argument("--scales-nm", type=float, nargs="+", help="shortcut for --option scales_nm=[...] (filter-bank scales in nm)")
    parser.add_argument("--pixel-size", metavar="NM|native",
                        help="working pixel size in nm (features computed there, labels on the input grid); "
                             "'native' keeps the input's; default: the checkpoint's training pixel size, else the method's")


def _add_block_shape_option(parser: argparse.ArgumentParser, *, features: bool = False) -> None:
    """The blocks a command works in; ``features``: blocks sized by the features they hold (segment)."""
    if features:
        from orgaseg.pipeline.runner import FEATURE_BYTES

        default = (f"at most {FEATURE_BYTES // 2**20} MiB of features, aligned to the input's chunks, shaped "
                   "to compute the fewest voxels with the halo the features need; recorded in the provenance")
    else:
        from orgaseg.pipeline.blocks import DEFAULT_BLOCK_VOXELS

        default = (f"about {DEFAULT_BLOCK_VOXELS / 2**20:g} Mi voxels, whole slices where they fit, in multiples "
                   "of the input's chunks")
    parser.add_argument("--block-shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help=f"block shape in voxels (default: blocks of {default})")


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where blocks run: serially, on threads, or on dask workers."""
    parser.add_argument("--workers", type=int, default=1,
                        help="blocks run at once (default 1): dask worker processes, or threads with --executor threads")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="threads in each local dask worker (default 1; dask only, without --scheduler)")
    parser.add_argument("--executor", choices=("serial", "threads", "dask"),
                        help="default: serial for one worker, dask for more or with --scheduler")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="join a running dask scheduler, e.g. tcp://host:8786 (dask-jobqueue: SLURM, LSF, ...)")


def _add_feature_memory_option(parser: argparse.ArgumentParser, what: str) -> None:
    from orgaseg.pipeline.runner import FEATURE_CACHE_BYTES

    parser.add_argument("--feature-memory", type=_bytes, metavar="SIZE",
                        help=f"{what}, at most SIZE (e.g. 256M, 2G, 0 for none; default "
                             f"{FEATURE_CACHE_BYTES // 2**30}G); dask workers keep none")


def _bytes(text: str) -> int:
    """A memory size such as ``512M``, ``1.5GiB`` or ``0`` as bytes (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if match is None or (match.group(3) == "IB" and not match.group(2)):
        raise argparse.ArgumentTypeError(f"expected a size such as 512M, 2G or 0, got {text!r}")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " "))


def _add_volume_options(parser: argparse.ArgumentParser, applies_to: str | None = None) -> None:
    """How to read the input volume: shared by info, crop, segment, train and inspect (``applies_to``: where the
    command reads several volumes, the help says which the options apply to)."""
    if applies_to is not None:
        parser = parser.add_argument_group("reading the volumes", f"these apply to {applies_to}")
    parser.add_argument("--key", help="dataset inside a container (HDF5, zarr group, N5)")
    parser.add_argument("--level", type=int, default=0,
                        help="resolution level of an OME-Zarr or N5 pyramid (default 0, full resolution)")
    parser.add_argument("--axes", help="stored axis order, e.g. xyz or zyx (default: the metadata's, else zyx); "
                                       "given, it replaces the metadata's, with a warning where they differ")
    parser.add_argument("--channel", type=int, metavar="N", help="the channel to read from multichannel data")
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size in nm (overrides metadata)")
    parser.add_argument("--strict-chunks", action="store_true",
                        help="refuse a Zarr/N5 array whose store lacks chunks (by default a warning: a missing "
                             "chunk reads as the fill value)")


def _methods() -> dict:
    from orgaseg.methods import METHODS

    return METHODS


def _add_class_map_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--class-map", metavar="MAP",
                   help="which reference values are which class: VALUE=NAME or LOW..HIGH=NAME items separated by "
                        "commas (e.g. 255=intracellular,0..128=membrane,191=mitochondria,159=extracellular), or a "
                        "JSON file {\"membrane\": [[0, 128]], ...}; values it does not name are left out")
    p.add_argument("--dataset", metavar="NAME",
                   help="use the class map of a dataset's label files as they ship: vnc or cdeep3m-mito")


def build_parser() -> argparse.ArgumentParser:
    from orgaseg.evaluation.matching import EVALUATION_MODES

    parser = _Parser(
        prog="orgaseg",
        description="Label-free organelle segmentation of volume EM: self-supervised features + clustering.",
    )
    parser.add_argument("--version", action="version", version=f"orgaseg {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", parents=[common], help="describe a volume: shape, dtype, voxel size, chunks, intensities")
    p.add_argument("path", help="a file, a folder of slices, or a zarr/n5/hdf5 container")
    _add_volume_options(p)
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("crop", parents=[common],
                       help="copy a region of a volume into a file of its own (to try a method on it, or crop its reference)")
    p.add_argument("path", help="a file, a folder of slices, or a zarr/n5/hdf5 container")
    p.add_argument("--region", required=True, nargs=3, metavar=("Z0:Z1", "Y0:Y1", "X0:X1"),
                   help="voxel ranges, start included, stop not (as Python slices); ':' is a whole axis")
    p.add_argument("-o", "--output", required=True, help="output image: .ome.zarr / .zarr or .tif")
    _add_volume_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=cmd_crop)

    p = sub.add_parser("segment", parents=[common], help="segment a volume into K clusters")
    p.add_argument("path", help="a file, a folder of slices, or a zarr/n5/hdf5 container")
    _add_stage_options(p, reused=True)
    p.add_argument("-k", type=int, help="number of clusters (default 6; with --centers or a trained sccs/cs2c "
                                        "--model, theirs)")
    p.add_argument("-o", "--output", required=True, help="output labels: .ome.zarr / .zarr or .tif")
    p.add_argument("--model", help="checkpoint of a method that learns, or a trained sccs / cs2c clusterer "
                                   "(orgaseg train --method sccs: labels with it, no fitting on this volume)")
    p.add_argument("--centers", "--reuse-clusterer", dest="centers", metavar="FILE",
                   help="reuse the clusterer of an earlier run: its .provenance.json (any clusterer; the run's "
                        "method, checkpoint, features, options and pixel size where not given) or a .npy of "
                        "k-means centres; the same structures get the same ids")
    p.add_argument("--invert", action="store_true", help="invert intensities (for bright-membrane contrast)")
    _add_volume_options(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where encoders run (default auto: CUDA when available)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and clustering (default 0)")
    p.add_argument("--sample-size", type=int,
                   help=f"voxels sampled to fit the clusterer (default: {_default_sample_sizes()}; "
                        "his4mae and sdae-recon: a thousandth of the voxels, 20,000 to 1,000,000)")
    _add_block_shape_option(p, features=True)
    _add_executor_options(p)
    _add_feature_memory_option(p, "the sampling pass's features kept for the labelling pass")
    p.add_argument("--save-features", metavar="PATH.zarr", help="also write every voxel's features (float16 Zarr)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output once the new one is complete (an interrupted run resumes either way)")
    p.set_defaults(run=cmd_segment)

    p = sub.add_parser("train", parents=[common],
                       help="train the encoder of a method that learns, or the sccs / cs2c clusterer")
    p.add_argument("paths", nargs="+", metavar="PATH", help="training volumes")
    p.add_argument("--method", required=True, type=_table_choice("method", learned_only=True),
                   metavar="NAME", help="method whose encoder (or clusterer) to train: "
                   + ", ".join(name for name, m in _methods().items() if m.trains))
    p.add_argument("-o", "--output", required=True, help="checkpoint file")
    p.add_argument("--preset", help="training preset: paper, cpu (default) or tiny")
    p.add_argument("--steps", type=int, help="schedule length in steps (default: the preset's)")
    p.add_argument("--minutes", type=float, help="wall-clock budget; alone, it also sets the schedule length")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at -o exactly")
    p.add_argument("--overwrite", action="store_true", help="start afresh, replacing the checkpoint at -o")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (auto: CUDA when available, with bfloat16 autocast)")
    p.add_argument("--seed", type=int, help="seed of initialisation, batches and masks (default 0; a resume keeps the "
                   "checkpoint's)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")
    p.add_argument("--snapshots", type=int, default=0, metavar="N",
                   help="also keep N checkpoints along the schedule (NAME.step-S.pt), to score training progress")
    p.add_argument("--pixel-size", metavar="NM|native",
                   help="working pixel size in nm: fields of view are drawn from the volumes resampled to it "
                        "(in-plane for anisotropic stacks); 'native' keeps theirs (default: the method's)")
    p.add_argument("--model-option", action="append", default=[], metavar="NAME=VALUE",
                   help="replace a field of the preset's model config, e.g. norm_pix_loss=false or "
                        "mask_ratio=0.75 (repeatable; ViT methods); sccs, cs2c: a feature or graph option, "
                        "e.g. region_nm=8960, superpixel_px=100, scales_nm=[10,20,40]")
    p.add_argument("-k", type=int, help="sccs, cs2c: clusters (default the papers': sccs 8, cs2c 14)")
    p.add_argument("--encoder", metavar="CKPT",
                   help="sccs, cs2c: a trained encoder (e.g. his4mae) whose frozen features the graphs are built "
                        "on (default: the filter bank)")
    p.add_argument("--features", type=_table_choice("features"), metavar="NAME",
                   help="sccs, cs2c: dense features (default filter-bank; expand-stride with --encoder)")
    p.add_argument("--graphs", type=int, metavar="N",
                   help="sccs, cs2c: augmented region graphs in the seeded training pool (default 64)")
    _add_volume_options(p, "every training volume")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="score a segmentation against a reference")
    p.add_argument("prediction", help="predicted cluster labels (ids 0..K-1)")
    p.add_argument("--reference", required=True,
                   help="reference labels: class ids 0..C-1, or any values with --class-map / --dataset")
    _add_class_map_options(p)
    p.add_argument("--mask", help="only voxels where this volume is non-zero are scored")
    p.add_argument("--ignore", type=int, nargs="+", metavar="V",
                   help="reference values not scored (default 255; with a class map: the values it does not name)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="names of reference classes 0..C-1")
    p.add_argument("--background", nargs="+", metavar="NAME",
                   help="non-organelle classes (default: the dataset's, else the first class)")
    p.add_argument("--mode", choices=EVALUATION_MODES, default="both",
                   help="cluster-to-class matching to report (default both), or names: a named volume (orgaseg name) "
                        "scored by its names, without matching")
    p.add_argument("--raw", help="the raw volume, for an overlay figure")
    p.add_argument("--key", help="dataset inside the prediction's container")
    p.add_argument("--reference-key", help="dataset inside the reference's container")
    p.add_argument("--raw-key", help="dataset inside the raw volume's container")
    p.add_argument("--mask-key", help="dataset inside the mask's container")
    p.add_argument("-o", "--output", required=True, help="report folder (report.json, report.md, confusion.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("inspect", parents=[common],
                       help="figures of what a trained ViT encoder learned (maester, his4mae, sdae-recon)")
    p.add_argument("checkpoint", help="a trained ViT checkpoint (orgaseg train --method maester, his4mae or "
                                      "sdae-recon; han-vae and sccs / cs2c checkpoints have no reconstructions)")
    p.add_argument("volume", help="volume to draw fields of view from")
    _add_volume_options(p)
    p.add_argument("--reference", help="reference classes, to colour the embedding by: class ids 0..C-1, or any "
                                       "values with --class-map / --dataset")
    p.add_argument("--reference-key", help="dataset inside the reference's container")
    _add_class_map_options(p)
    p.add_argument("--classes", nargs="+", metavar="NAME", help="names of reference classes 0..C-1")
    p.add_argument("-k", type=int, default=6, help="clusters colouring the embedding (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled fields of view and masks (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where the model runs (default cpu)")
    p.add_argument("--pixel-size", metavar="NM|native",
                   help="working pixel size in nm the fields of view are drawn at; 'native' keeps the volume's "
                        "(default: the checkpoint's training pixel size, as segment reads it)")
    p.add_argument("-o", "--output", required=True, help="folder for reconstructions.png and embedding.png")
    p.add_argument("--overwrite", action="store_true", help="replace the figures of an earlier run")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("benchmark", parents=[common], help="run a method on a named dataset for every K")
    p.add_argument("--dataset", required=True, help="vnc, cdeep3m-mito, betaseg, cellmap or phantom")
    p.add_argument("--data-root", help="folder holding the datasets (default $ORGASEG_DATA_ROOT, else ../shared/data)")
    _add_stage_options(p)
    p.add_argument("--preset", help="encoder training preset: paper, cpu (default) or tiny (methods with an encoder; "
                                    "sccs and cs2c are fitted on each volume: --option preset=NAME)")
    p.add_argument("--model", help="evaluate this encoder checkpoint instead of training one (a trained sccs / cs2c "
                                   "clusterer is scored with segment --model and evaluate)")
    p.add_argument("--steps", type=int, help="encoder training steps (default: the preset's)")
    p.add_argument("--minutes", type=float, help="encoder training budget in minutes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where encoders train and run (default auto)")
    p.add_argument("-k", default="4-10", help="K values: 4-10, 6 or 4,6,8 (default 4-10)")
    p.add_argument("--seed", type=int, default=0, help="seed of training, samples and clusterings (default 0)")
    p.add_argument("--sample-size", type=int, help="voxels sampled to fit the clusterer (default: the method's)")
    p.add_argument("-o", "--output", required=True, help="results folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.set_defaults(run=cmd_benchmark)

    p = sub.add_parser("instances", parents=[common],
                       help="number the connected components of each organelle class (with optional clean-up)")
    p.add_argument("named", help="class labels: the output of 'orgaseg name' or any integer label volume")
    p.add_argument("-o", "--output", required=True, help="instance labels: .ome.zarr (with a pyramid) or .tif")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="classes to number, by name or value (default: every named class but unassigned, background and other; "
                        "without names every non-zero value)")
    p.add_argument("--min-size-nm3", type=float, metavar="V", help="remove components smaller than V nm^3")
    p.add_argument("--min-size-nm2", type=float, metavar="A",
                   help="a single image: remove components smaller than A nm^2 (its area)")
    p.add_argument("--fill-holes", action="store_true",
                   help="fill background pockets enclosed by one class (after the small-component removal)")
    p.add_argument("--majority", type=float, metavar="R",
                   help="majority filter first: each voxel takes the most frequent class within R nm along each axis")
    p.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=6,
                   help="voxels of a class are neighbours when they share a face (6, default), "
                        "a face or an edge (18), or also a corner (26)")
    p.add_argument("--key", help="dataset inside a container")
    p.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size in nm (overrides metadata)")
    _add_block_shape_option(p)
    _add_executor_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=cmd_instances)

    p = sub.add_parser("measure", parents=[common], help="morphometrics of every instance in physical units")
    p.add_argument("instances", help="instance labels: the output of 'orgaseg instances' or any integer label volume")
    p.add_argument("-o", "--output", required=True, metavar="TABLE", help="per-instance table: .csv or .parquet (pyarrow)")
    p.add_argument("--summary", metavar="SUMMARY", help="per-class summary table: .csv or .parquet")
    p.add_argument("--raw", help="intensity volume of the same shape: mean and std intensity per instance")
    p.add_argument("--mask", metavar="CELL", help="cell mask of the same shape: volume fraction of each class in the summary")
    p.add_argument("--key", help="dataset inside the instances' container")
    p.add_argument("--raw-key", help="dataset inside the raw volume's container")
    p.add_argument("--mask-key", help="dataset inside the mask's container")
    p.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size in nm (overrides metadata)")
    _add_block_shape_option(p)
    _add_executor_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing tables")
    p.set_defaults(run=cmd_measure)

    p = sub.add_parser("name", parents=[common], help="name a segmentation's clusters from a few clicks or scribbles")
    p.add_argument("segmentation", metavar="SEG", help="output of 'orgaseg segment' (its provenance beside it)")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--points", metavar="POINTS.csv",
                       help="clicked points, a CSV with the header z,y,x,name or a napari points layer saved as CSV "
                            "(axis-0,axis-1,axis-2 as z,y,x, and a name feature)")
    given.add_argument("--scribbles", metavar="LABELS",
                       help="sparse label volume of SEG's shape (0 = not annotated), names with --names")
    given.add_argument("--mapping", metavar="FROM.provenance.json",
                       help="reuse the mapping (and classifier) of an earlier named output on a segmentation made "
                            "with the same clusterer (segment --centers)")
    p.add_argument("--scribbles-key", metavar="KEY", help="dataset inside the scribbles' container")
    p.add_argument("--names", metavar="NAMES.csv", help="the scribbles' names: a CSV with the header value,name "
                                                         "(default: the values themselves)")
    p.add_argument("--units", choices=("voxels", "nm"), default="voxels",
                   help="units of the points' z,y,x (default voxels; nm: in the coordinates napari shows, those of the "
                        "full volume for a crop, whose translation is subtracted)")
    p.add_argument("--refine", action="store_true",
                   help="train a classifier on the annotated voxels' features and clusters and relabel every voxel")
    p.add_argument("--classifier", choices=("logistic", "mlp", "forest"),
                   help="with --refine: logistic regression (default), a small neural network (one hidden layer) "
                        "or a random forest")
    p.add_argument("--prior", choices=("estimated", "clicks"),
                   help="with --refine: class frequencies to predict under: estimated on unannotated voxels "
                        "(default for logistic and mlp: clicks come in equal numbers per class) or those of the "
                        "annotations (default for forest)")
    p.add_argument("--context", metavar="SIZES",
                   help="with --refine: superpixel sizes in working pixels whose feature means and spreads the "
                        "classifier reads beside each voxel's features (default 100,400; none: the voxel's alone)")
    p.add_argument("--z-context", action="store_true",
                   help="with --refine: the classifier also reads the mean of those features on the slices above and "
                        "below (organelles run on through several sections)")
    p.add_argument("--raw", help="with --refine: the segmented volume, when SEG's provenance no longer points to it")
    p.add_argument("--raw-key", help="dataset inside the raw volume's container")
    p.add_argument("--model", help="with --refine: SEG's checkpoint, when its provenance no longer points to it")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="with --refine: where encoders run (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training subsample, the network and the forest (default 0)")
    _add_executor_options(p)
    _add_feature_memory_option(p, "with --refine: the training pass's features kept for the labelling pass")
    p.add_argument("-o", "--output", required=True, help="named labels: .ome.zarr / .zarr or .tif")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(run=cmd_name)

    p = sub.add_parser("methods", parents=[common], help="list the methods, encoders, dense features and clusterers")
    p.set_defaults(run=cmd_methods)

    p = sub.add_parser("demo", parents=[common], help="segment and score a synthetic cell, no data needed")
    p.add_argument("-o", "--output", default="orgaseg-demo", help="output folder (default ./orgaseg-demo)")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"),
                   help="phantom shape in voxels (default 64 256 256)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo")
    p.set_defaults(run=cmd_demo)
    for command in sub.choices.values():  # what messages may suggest to this command (orgaseg.errors.render)
        command.set_defaults(option_strings=frozenset(command._option_string_actions))
    return parser


def main(argv: list[str] | None = None) -> int:
    # a file name that is not UTF-8 reaches us with its bytes as surrogates: print it
    # (stdout gives the bytes back, stderr shows them escaped) instead of failing on a strict stream
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=errors)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while starting up
        print("orgaseg: interrupted", file=sys.stderr)
        return 130
    progress = TqdmProgress(disable=args.quiet)
    handler = TqdmLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, handlers=[handler], force=True)
    logging.captureWarnings(True)  # warnings too are written above the progress bars
    # what a learned encoder's run will cost is said up front (README, `segment`), unless --quiet
    # and, for segment --centers, the stages taken from the reused run
    for name in ("orgaseg.pipeline.cost", "orgaseg.segmentation"):
        logging.getLogger(name).setLevel(logging.NOTSET if args.quiet or args.debug else logging.INFO)
    command = (args.command, args.option_strings)
    if not args.debug:
        warnings.simplefilter("default")
        # a file a lazy reader keeps open until exit (a TIFF read through its zarr store) is nothing to act on
        warnings.simplefilter("ignore", ResourceWarning)
        # the log handler ends the line; orgaseg's warnings name command-line options here
        warnings.formatwarning = lambda message, category, *rest: "warning: " + (
            message.for_command_line(command) if hasattr(message, "for_command_line") else str(message))
    terminate = signal.signal(signal.SIGTERM, _terminate)
    try:
        if getattr(args, "device", None) == "cuda":  # refused at once, also where nothing would run on it
            from orgaseg.models.device import resolve_device

            resolve_device("cuda")
        return args.run(args, progress)
    except OrgasegError as err:
        progress.close(leave=False)
        if args.debug:
            raise
        print(f"orgaseg {args.command}: error: {err.for_command_line(command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        progress.close(leave=False)
        # zarr's pending writes, torn down at exit, are not worth a word after this line
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        terminated = isinstance(err, _Terminated)
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))  # what was kept, how to resume
        print(f"orgaseg {args.command}: {'terminated (SIGTERM)' if terminated else 'interrupted'}{notes}",
              file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # the reader of stdout stopped (`orgaseg methods | head`): what it read is what it asked
        progress.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except Exception as err:  # an unexpected failure: say so plainly, traceback with --debug
        progress.close()
        if args.debug:
            raise
        print(f"orgaseg {args.command}: unexpected error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, terminate)  # main() called from Python leaves the caller's handler as it was


if __name__ == "__main__":
    sys.exit(main())
