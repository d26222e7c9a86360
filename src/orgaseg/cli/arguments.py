"""The ``orgaseg`` commands and their options (:func:`build_parser`); choices are read from the stage tables."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from orgaseg import __version__
from orgaseg.errors import OrgasegError


class _UsageError(OrgasegError):
    """A command line argparse refused."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``orgaseg segment: error: ...``, exit 2, no usage dump."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}")

    def _get_nargs_pattern(self, action):
        # --voxel-size takes three numbers or a single image's two, a count argparse's nargs cannot say; the
        # command refuses any but 2 or 3 (_voxel_size in commands), with the reason
        if isinstance(action, _VoxelSizeAction):
            return "(A{1,3})"
        return super()._get_nargs_pattern(action)


def _voxel_size_number(text: str) -> float:
    """One number of ``--voxel-size``; anything else is said with the usual cause, a path taken for a third
    number (two numbers just before the input path)."""
    try:
        return float(text)
    except ValueError:
        taken_path = Path(text).exists() or Path(text).suffix  # argparse cannot stop at two numbers
        raise argparse.ArgumentTypeError(
            f"expected numbers in nm, Z Y X (Y X for a single image), got {text!r}"
            + ("; two numbers just before the input path take it for the third: give the path first"
               if taken_path else "")) from None


class _VoxelSizeAction(argparse.Action):
    """``--voxel-size``: up to three numbers (usage and help say ``Z Y X``), stored as given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


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
    _add_voxel_size_option(parser)
    parser.add_argument("--strict-chunks", action="store_true",
                        help="refuse a Zarr/N5 array whose store lacks chunks (by default a warning: a missing "
                             "chunk reads as the fill value)")


def _add_voxel_size_option(parser) -> None:
    """``--voxel-size Z Y X`` (``Y X`` for a single image), which replaces the metadata's (an argument parser or
    group)."""
    parser.add_argument("--voxel-size", type=_voxel_size_number, nargs=3, action=_VoxelSizeAction,
                        metavar=("Z", "Y", "X"),
                        help="voxel size in nm (overrides metadata); Y X for a single image, whose Z is then Y")


def _add_class_map_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--class-map", metavar="MAP",
                   help="which reference values are which class: VALUE=NAME or LOW..HIGH=NAME items separated by "
                        "commas (e.g. 255=intracellular,0..128=membrane,191=mitochondria,159=extracellular), or a "
                        "JSON file {\"membrane\": [[0, 128]], ...}; values it does not name are left out")
    p.add_argument("--dataset", metavar="NAME",
                   help="use the class map of a dataset's label files as they ship: vnc or cdeep3m-mito")


def _info_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a file, a folder of slices, or a zarr/n5/hdf5 container")
    _add_volume_options(p)


def _crop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a file, a folder of slices, or a zarr/n5/hdf5 container")
    p.add_argument("--region", required=True, nargs=3, metavar=("Z0:Z1", "Y0:Y1", "X0:X1"),
                   help="voxel ranges, start included, stop not (as Python slices); ':' is a whole axis")
    p.add_argument("-o", "--output", required=True, help="output image: .ome.zarr / .zarr or .tif")
    _add_volume_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _segment_options(p: argparse.ArgumentParser) -> None:
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


def _train_options(p: argparse.ArgumentParser) -> None:
    from orgaseg.methods import METHODS

    p.add_argument("paths", nargs="+", metavar="PATH", help="training volumes")
    p.add_argument("--method", required=True, type=_table_choice("method", learned_only=True),
                   metavar="NAME", help="method whose encoder (or clusterer) to train: "
                   + ", ".join(name for name, m in METHODS.items() if m.trains))
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


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    from orgaseg.evaluation.matching import EVALUATION_MODES

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


def _inspect_options(p: argparse.ArgumentParser) -> None:
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


def _benchmark_options(p: argparse.ArgumentParser) -> None:
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


def _instances_options(p: argparse.ArgumentParser) -> None:
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
    _add_voxel_size_option(p)
    _add_block_shape_option(p)
    _add_executor_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", help="instance labels: the output of 'orgaseg instances' or any integer label volume")
    p.add_argument("-o", "--output", required=True, metavar="TABLE", help="per-instance table: .csv or .parquet (pyarrow)")
    p.add_argument("--summary", metavar="SUMMARY", help="per-class summary table: .csv or .parquet")
    p.add_argument("--raw", help="intensity volume of the same shape: mean and std intensity per instance")
    p.add_argument("--mask", metavar="CELL", help="cell mask of the same shape: volume fraction of each class in the summary")
    p.add_argument("--key", help="dataset inside the instances' container")
    p.add_argument("--raw-key", help="dataset inside the raw volume's container")
    p.add_argument("--mask-key", help="dataset inside the mask's container")
    _add_voxel_size_option(p)
    _add_block_shape_option(p)
    _add_executor_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing tables")


def _name_options(p: argparse.ArgumentParser) -> None:
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


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="orgaseg-demo", help="output folder (default ./orgaseg-demo)")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"),
                   help="phantom shape in voxels (default 64 256 256)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo")


#: The commands: name, summary (``orgaseg --help``) and what adds their options.
COMMANDS = (
    ("info", "describe a volume: shape, dtype, voxel size, chunks, intensities",
     _info_options),
    ("crop", "copy a region of a volume into a file of its own (to try a method on it, or crop its reference)",
     _crop_options),
    ("segment", "segment a volume into K clusters",
     _segment_options),
    ("train", "train the encoder of a method that learns, or the sccs / cs2c clusterer",
     _train_options),
    ("evaluate", "score a segmentation against a reference",
     _evaluate_options),
    ("inspect", "figures of what a trained ViT encoder learned (maester, his4mae, sdae-recon)",
     _inspect_options),
    ("benchmark", "run a method on a named dataset for every K",
     _benchmark_options),
    ("instances", "number the connected components of each organelle class (with optional clean-up)",
     _instances_options),
    ("measure", "morphometrics of every instance in physical units",
     _measure_options),
    ("name", "name a segmentation's clusters from a few clicks or scribbles",
     _name_options),
    ("methods", "list the methods, encoders, dense features and clusterers",
     None),
    ("demo", "segment and score a synthetic cell, no data needed",
     _demo_options),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``orgaseg`` parser: a subcommand per row of :data:`COMMANDS`."""
    parser = _Parser(
        prog="orgaseg",
        description="Label-free organelle segmentation of volume EM: self-supervised features + clustering.",
    )
    parser.add_argument("--version", action="version", version=f"orgaseg {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, summary, add_options in COMMANDS:
        command = sub.add_parser(name, parents=[common], help=summary)
        if add_options is not None:
            add_options(command)
    for command in sub.choices.values():  # what messages may suggest to this command (orgaseg.errors.render)
        command.set_defaults(option_strings=frozenset(command._option_string_actions))
    return parser
