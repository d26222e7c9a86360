"""What each ``orgaseg`` command does, ``cmd_COMMAND(args, progress)``: reads its arguments, runs the library
function and prints what it wrote; returns the exit code."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path

from orgaseg.errors import OrgasegError, OrgasegWarning


def _voxel_size(values):
    """``--voxel-size`` as given: three numbers (z y x), or two (y x) that the reader takes for a single image."""
    if values is None:
        return None
    if len(values) not in (2, 3) or any(v <= 0 for v in values):
        raise OrgasegError(f"--voxel-size must be three positive numbers (z y x nm), or two (y x) for a single "
                           f"image, got {' '.join(map(str, values))}")
    return tuple(values)


def _open_input(path, args):
    """The volume at ``path``, read as the volume options say (``--key``, ``--level``, ``--axes``, ``--channel``,
    ``--voxel-size``, ``--strict-chunks``)."""
    from orgaseg.io import open_volume

    return open_volume(path, key=args.key, voxel_size=_voxel_size(args.voxel_size), level=args.level,
                       axes=args.axes, channel=args.channel, strict_chunks=args.strict_chunks)


def _executor(args):
    """Where blocks run, as ``--executor``, ``--workers``, ``--threads-per-worker`` and ``--scheduler`` say."""
    from orgaseg.pipeline.executors import make_executor

    return make_executor(args.executor, workers=args.workers, threads_per_worker=args.threads_per_worker,
                         scheduler=args.scheduler)


def cmd_info(args, progress) -> int:
    from orgaseg.io import sample_intensities
    from orgaseg.io.metadata import MAX_EM_PIXEL_NM, format_sizes, micrometre_hint
    from orgaseg.io.normalize import finite_percentiles
    from orgaseg.io.readers import pyramid_levels

    volume = _open_input(args.path, args)
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
    from orgaseg.io.crop import crop_volume, output_format, parse_region
    from orgaseg.io.metadata import format_sizes

    output_format(args.output)  # an unknown suffix is refused before the source is opened
    volume = _open_input(args.path, args)
    region = parse_region(args.region, volume.shape)
    path = crop_volume(volume, region, args.output, overwrite=args.overwrite, progress=progress)
    shape = " x ".join(str(r.stop - r.start) for r in region)
    print(f"wrote {path}: {shape} voxels from {volume.path}, region "
          + " ".join(f"{r.start}:{r.stop}" for r in region)
          + " (z y x), voxel size " + ("unknown" if volume.attrs.get("voxel_size_assumed")
                                         else f"{format_sizes(volume.voxel_size)} nm"))
    return 0


def cmd_segment(args, progress) -> int:
    from orgaseg.segmentation import segment

    started = time.time()
    executor = _executor(args)
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
        volumes = [_open_input(path, args) for path in args.paths]
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
    from orgaseg.viz.inspect import inspect_model

    volume = _open_input(args.volume, args)
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
    print((output / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {output / 'results.json'}, {output / 'results.md'} and {output / 'figures'}/ "
          f"(segmentation {record['segmentation']['wall_s']} s for all K)")
    return 0


def cmd_name(args, progress) -> int:
    from orgaseg.organelles import name_clusters

    if args.names is not None and args.scribbles is None:
        raise OrgasegError("--names goes with --scribbles (points carry their names in the 'name' column)")
    from orgaseg.organelles.naming import mapping_holds_classifier

    asked = (args.executor, args.scheduler, args.workers, args.threads_per_worker) != (None, None, 1, 1)
    if asked and not (args.refine or mapping_holds_classifier(args.mapping)):
        raise OrgasegError("--workers, --threads-per-worker, --executor and --scheduler take effect only with "
                           "--refine or a refined --mapping (naming alone relabels the clusters in one pass here)")
    executor = _executor(args) if asked else None
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
    report = json.loads(Path(paths["report json"]).read_text(encoding="utf-8"))
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

    executor = _executor(args)
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
    from orgaseg.io.partial import PartialOutput, output_folder
    from orgaseg.io.readers import existing_path
    from orgaseg.io.writers import writing
    from orgaseg.organelles.measure import check_table_path, measure_instances, write_table

    for path in (args.instances, args.raw, args.mask):
        if path is not None:
            existing_path(path)  # a missing input is the first thing to say
    if args.summary is not None and Path(args.summary).resolve() == Path(args.output).resolve():
        raise OrgasegError(f"{args.summary}: the summary needs a path of its own, not the table's (-o)")
    tables = [check_table_path(path, overwrite=args.overwrite)  # before the long work
              for path in (args.output, args.summary) if path is not None]
    with contextlib.ExitStack() as stack:
        # each table is built in TABLE.partial/, whose lock refuses a second run now rather than after both measured;
        # leaving early (an error, Ctrl-C) removes it, and the folders made for it
        partials = []
        for path in tables:
            with writing(path):
                stack.enter_context(output_folder(path.parent))
                partials.append(stack.enter_context(PartialOutput(path, args.overwrite, resume_key=None)))
        executor = _executor(args)
        try:
            result = measure_instances(args.instances, raw=args.raw, mask=args.mask, key=args.key,
                                       raw_key=args.raw_key, mask_key=args.mask_key,
                                       voxel_size=_voxel_size(args.voxel_size),
                                       block_shape=tuple(args.block_shape) if args.block_shape else None,
                                       executor=executor, progress=progress)
        finally:
            executor.close()
        written = []
        for partial, table in zip(partials, (result.table, result.summary)):
            write_table(table, partial.target)
            with writing(partial.path):
                partial.move_into_place()
            written.append(partial.path)
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
