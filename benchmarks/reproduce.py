"""Regenerate every committed benchmark result from scratch, then render ``docs/results.md``.

The runs are the table :data:`RUNS`: each has a name (its folder under
``benchmarks/results/``), a section (``cpu`` or ``gpu``) and either the
arguments of :func:`orgaseg.benchmark.run_benchmark` or, for the benchmark
scripts with their own formats, a command line. Learned methods always train
for a fixed number of steps, never for a number of minutes, so a rerun on a
faster or busier machine trains the same model.

- ``cpu``: baseline, maester and his4mae (``cpu`` preset, :data:`CPU_STEPS`
  steps) on vnc and cdeep3m-mito at the native pixel size and at twice and four
  times it, and sdae-recon at twice it, K = 4..10, seed 0; then the scaling,
  executor, throughput and linear-probe scripts, the graph clusterers and Han
  et al.'s VAE. Hours on a 2-core machine.
- ``gpu``: maester and his4mae (``paper`` preset, :data:`GPU_STEPS`) on vnc
  and cdeep3m-mito on CUDA; about 10 minutes on one H200. The checkpoints are
  written into the results folders (``model.pt``) beside the results. Both are
  scored with expand-stride features (S = 40), as in the cpu section, not with
  MAESTER's cover-and-stride, whose ~100x more forward passes would not fit
  the device budget; han-vae, sccs and cs2c have no gpu runs.

A run whose result file exists is skipped unless ``--force``: an interrupted
regeneration continues where it stopped. ``--tiny`` runs the same plan on a
small synthetic phantom with the ``tiny`` presets and a few steps on the CPU,
in about a minute: it checks the plan's logic, not its numbers.

Usage::

    python benchmarks/reproduce.py --list                      # the plan, nothing run
    python benchmarks/reproduce.py                             # the cpu section
    python benchmarks/reproduce.py --section gpu --data-root DATA --results OUT/results --docs OUT/results.md
    python benchmarks/reproduce.py --only 'vnc-*' --force      # rerun some runs
    python benchmarks/reproduce.py --render-only               # only docs/results.md
    python benchmarks/reproduce.py --tiny --section all --results /tmp/r --docs /tmp/r.md
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from render_results import render_results

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("cpu", "gpu")

#: Cluster counts and seed of every run.
KS = tuple(range(4, 11))
SEED = 0
#: Voxels sampled (pooled over the evaluation volumes) to fit the clusterers, the same for every method.
SAMPLE_SIZE = 200_000

#: Native in-plane pixel size of the real datasets, nm (cdeep3m-mito's is an assumption of its loader).
NATIVE_PIXEL_NM = {"vnc": 4.6, "cdeep3m-mito": 5.9}

#: Training steps of the ``cpu`` presets. On the 2-core AMD EPYC machine (batch 64) maester trains at
#: about 104 fields of view per second and his4mae at about 64 (benchmarks/his4mae_train.sh), so 600
#: steps take about 6 and 10 minutes: about the 6-minute budget of the earlier HiS4MAE comparison
#: (maester 585 steps), which keeps the 12 trainings of the section near 1.5 hours. With expand-stride
#: segmentation at about 20,000 voxels/s at the native pixel size, the cpu section takes about
#: 3-4 hours on that machine.
CPU_STEPS = 600

#: Training steps of the ``paper`` presets on one H200, sized so that the gpu section (four runs) ends
#: within 10 minutes. An estimate, not a measurement (no GPU was at hand when it was set): maester
#: spends about 6 GFLOP per field of view per step (forward and backward through the 14-block,
#: 192-wide encoder on the 128 visible tokens and the 7-block, 128-wide decoder on all 256), i.e.
#: 0.75 TFLOP per batch of 128; his4mae adds the teacher's forward pass over all 256 tokens, about
#: 9 GFLOP per field of view, 2.3 TFLOP per batch of 256. Models this narrow reach a small part of the
#: H200's ~790 TFLOP/s bf16 matrix rate; counting 50 TFLOP/s and as much again for sampling, the
#: optimiser and kernel launches gives about 0.05 s per maester step and 0.1 s per his4mae step, so
#: 900 and 450 steps train in about 45 s each. Segmenting the evaluation volumes (21 M and 31 M voxels,
#: expand-stride S = 40: about 2 MFLOP per voxel on the GPU) and k-means for seven K on the CPU take
#: about a minute per run, so the section takes about 4 x (45 + 60) s = 7 minutes plus start-up.
#: The training wall times in the results show the real rates: scale these steps by them.
GPU_STEPS = {"maester": 900, "his4mae": 450}

#: The dense features of the learned methods (the setting of the earlier HiS4MAE comparison).
EXPAND_STRIDE_40 = {"features": "expand-stride", "options": {"stride": 40}}

#: ``--tiny``: every dataset becomes this phantom (10 nm pixels), every preset ``tiny``, every run one
#: step, two K and a small k-means sample: about 2-4 s a run on 2 cores, half of it the figures.
TINY_PHANTOM = {"shape": (2, 128, 128), "voxel_size": (20.0, 10.0, 10.0)}
TINY_STEPS = 1
TINY_KS = (2, 3)
TINY_SAMPLE_SIZE = 1_000


@dataclass(frozen=True)
class BenchmarkRun:
    """One call of :func:`orgaseg.benchmark.run_benchmark`, writing ``RESULTS/name/``.

    ``features``, ``clusterer`` and ``options`` are passed only when set, so a
    run uses the method's own stage unless it says otherwise; ``pixel_size``
    (nm, or ``"native"``) is always passed, so a change of a method's default
    pixel size cannot change what a run measures. ``model`` (a checkpoint,
    ``{results}`` standing for the results folder) evaluates an encoder that
    another run trained, named in ``requires``, instead of training one.
    """

    name: str
    section: str
    dataset: str
    method: str
    pixel_size: float | str
    preset: str | None = None
    steps: int | None = None
    device: str = "cpu"
    features: str | None = None
    clusterer: str | None = None
    options: dict = field(default_factory=dict)
    ks: tuple[int, ...] = KS
    seed: int = SEED
    sample_size: int = SAMPLE_SIZE
    #: Options of :func:`orgaseg.load_dataset` (the phantom's shape with ``--tiny``).
    dataset_options: dict = field(default_factory=dict)
    model: str | None = None
    requires: tuple[str, ...] = ()

    def arguments(self, results: Path | str = "{results}") -> dict:
        """Keyword arguments of ``run_benchmark`` besides the dataset and the output folder."""
        arguments = {"ks": list(self.ks), "seed": self.seed, "sample_size": self.sample_size,
                     "device": self.device, "pixel_size": self.pixel_size}
        if self.model is not None:
            arguments["model"] = self.model.format(results=results)
        for name in ("preset", "steps", "features", "clusterer"):
            if getattr(self, name) is not None:
                arguments[name] = getattr(self, name)
        if self.options:
            arguments["options"] = dict(self.options)
        return arguments

    def describe(self) -> str:
        """The call, for ``--list`` and the log."""
        dataset = self.dataset + (f" {self.dataset_options}" if self.dataset_options else "")
        return f"run_benchmark(dataset={dataset}, method={self.method}, " + ", ".join(
            f"{key}={value!r}" for key, value in self.arguments().items()) + ")"

    def result_file(self, results: Path) -> Path:
        """The file whose presence means the run is done."""
        return results / self.name / "results.json"

    def run(self, results: Path, data_root: Path | None, work: Path) -> None:
        from orgaseg.benchmark import run_benchmark

        dataset = _load_dataset(self.dataset, data_root, tuple(sorted(self.dataset_options.items())))
        run_benchmark(dataset, self.method, results / self.name, **self.arguments(results))

    def tiny(self) -> BenchmarkRun:
        """The same run on :data:`TINY_PHANTOM` with the ``tiny`` preset, on the CPU, in seconds."""
        pixel_size = self.pixel_size
        if pixel_size != "native":  # the same multiple of the native pixel size
            factor = pixel_size / NATIVE_PIXEL_NM[self.dataset]
            pixel_size = round(TINY_PHANTOM["voxel_size"][-1] * factor, 6)
        return dataclasses.replace(
            self, dataset="phantom", dataset_options=TINY_PHANTOM, pixel_size=pixel_size, device="cpu",
            preset=None if self.preset is None else "tiny", steps=None if self.steps is None else TINY_STEPS,
            ks=TINY_KS, sample_size=TINY_SAMPLE_SIZE,
            options={**self.options, "preset": "tiny"} if "preset" in self.options else self.options,
        )


@functools.cache
def _load_dataset(name: str, data_root: Path | None, options: tuple):
    """A dataset, loaded once for all the runs on it (a phantom is drawn once, not once per run)."""
    import orgaseg

    return orgaseg.load_dataset(name, data_root, **dict(options))


@dataclass(frozen=True)
class ScriptRun:
    """A benchmark script with its own results format, run as a command in the cpu section.

    In ``command``, ``{python}`` is this interpreter, ``{results}`` the results
    folder, ``{output}`` this run's folder in it and ``{work}`` a scratch
    folder. With ``stdout``, the command's output is saved as ``output_file``.
    ``requires`` names runs whose results (e.g. a checkpoint) the command reads.
    """

    name: str
    command: tuple[str, ...]
    output_file: str = "results.json"
    stdout: bool = False
    requires: tuple[str, ...] = ()
    section: str = "cpu"

    def describe(self) -> str:
        """The command line, for ``--list`` and the log."""
        return " ".join(self.command) + (f" > {{output}}/{self.output_file}" if self.stdout else "")

    def result_file(self, results: Path) -> Path:
        """The file whose presence means the run is done."""
        return results / self.name / self.output_file

    def run(self, results: Path, data_root: Path | None, work: Path) -> None:
        output = results / self.name
        output.mkdir(parents=True, exist_ok=True)
        command = [part.format(python=sys.executable, results=results, output=output, work=work)
                   for part in self.command]
        env = dict(os.environ, **({"ORGASEG_DATA_ROOT": str(data_root)} if data_root is not None else {}))
        if self.stdout:
            partial = output / f".{self.output_file}.partial"
            with partial.open("w") as stream:
                subprocess.run(command, cwd=ROOT, env=env, stdout=stream, check=True)
            partial.replace(self.result_file(results))
        else:
            subprocess.run(command, cwd=ROOT, env=env, check=True)


def _cpu(dataset: str, method: str, pixel_size: float | str) -> BenchmarkRun:
    """A cpu-section run; learned methods with the ``cpu`` preset and expand-stride features."""
    tag = "native" if pixel_size == "native" else f"{pixel_size:g}nm"
    if method == "baseline":
        return BenchmarkRun(f"{dataset}-baseline-{tag}", "cpu", dataset, method, pixel_size)
    return BenchmarkRun(f"{dataset}-{method}-cpu-{tag}", "cpu", dataset, method, pixel_size, preset="cpu",
                        steps=CPU_STEPS, **EXPAND_STRIDE_40)


def _gpu(dataset: str, method: str) -> BenchmarkRun:
    """A gpu-section run: the ``paper`` preset on CUDA at the native pixel size."""
    return BenchmarkRun(f"{dataset}-{method}-paper-native", "gpu", dataset, method, "native", preset="paper",
                        steps=GPU_STEPS[method], device="cuda", **EXPAND_STRIDE_40)


def _han(dataset: str, method: str) -> BenchmarkRun:
    """A cpu-section run of Han et al.'s VAE (``cpu`` preset, :data:`CPU_STEPS`) at the paper's 16 nm.

    Voxel latents at :data:`HAN_STRIDE` (the 3D variant encodes 16^3 patches at ~370 per second on one
    thread: one patch per 16 voxels, not 4, keeps a run near half an hour).
    """
    return BenchmarkRun(f"{dataset}-{method}-cpu-16nm", "cpu", dataset, method, 16.0, preset="cpu", steps=CPU_STEPS,
                        options={"stride": HAN_STRIDE[method]})


def _graph(dataset: str, clusterer: str, scale: int = 2, encoder: str | None = None, seed: int = SEED,
           **options) -> BenchmarkRun:
    """A cpu-section run of a superpixel-graph clusterer at ``scale`` x the native pixel size (a ``seed`` other
    than :data:`SEED` named in the run's name).

    On filter-bank features, or with ``encoder`` (``maester``, ``his4mae``) on the expand-stride features
    of the checkpoint that the ``cpu`` run of that method trained at the same pixel size (no training
    here, so every clusterer reads the same encoder). Fitted on whole blocks holding
    :data:`GRAPH_SAMPLE_SIZE` input voxels (8 of vnc's 20 slices); SCCS and CS²C with their ``cpu``
    preset; CS²C also at the paper's K = 14.
    """
    neural = clusterer in ("sccs", "cs2c", "cs2c-spa")
    ablation = "".join(f"-{key}{value:g}" for key, value in options.items()) + (f"-seed{seed}" if seed != SEED else "")
    pixel = round(scale * NATIVE_PIXEL_NM[dataset], 6)
    options = {**({"preset": "cpu"} if neural else {}), **options}
    common = {"clusterer": clusterer, "ks": KS + ((14,) if clusterer.startswith("cs2c") else ()),
              "sample_size": GRAPH_SAMPLE_SIZE, "seed": seed}
    if encoder is None:
        return BenchmarkRun(f"{dataset}-{clusterer}{ablation}-filter-bank-{pixel:g}nm", "cpu", dataset, "baseline",
                            pixel, options=options, **common)
    trained = f"{dataset}-{encoder}-cpu-{pixel:g}nm"
    return BenchmarkRun(f"{dataset}-{clusterer}{ablation}-{encoder}-{pixel:g}nm", "cpu", dataset, encoder, pixel,
                        model=f"{{results}}/{trained}/model.pt", requires=(trained,),
                        features=EXPAND_STRIDE_40["features"], options={**EXPAND_STRIDE_40["options"], **options},
                        **common)


#: Input voxels of whole blocks the graph clusterers are fitted on.
GRAPH_SAMPLE_SIZE = 8_000_000

#: In-plane stride of the voxel latents in the Han et al. runs (working pixels).
HAN_STRIDE = {"han-vae": 4, "han-vae-2d": 2}

ES40 = "features=expand-stride,stride=40"

#: Every committed result, in the order they run (a script after the runs it reads).
RUNS: tuple[BenchmarkRun | ScriptRun, ...] = (
    # every method at the native pixel size, twice and four times it (the same run order as before)
    *(_cpu(dataset, method, size) for dataset, native in NATIVE_PIXEL_NM.items()
      for method in ("baseline", "maester", "his4mae") for size in ("native", round(2 * native, 6), round(4 * native, 6))),
    # HiS4MAE's ablation without the codebook (the paper's Table 3), at the pixel size of the graph-clusterer runs
    *(_cpu(dataset, "sdae-recon", round(2 * native, 6)) for dataset, native in NATIVE_PIXEL_NM.items()),
    # 1x-8x tiled vnc volumes (the slowest of two repeats of each), then serial against dask workers
    ScriptRun("scaling-vnc", ("{python}", "benchmarks/scaling.py", "--work", "{work}", "-o", "{output}",
                              "--repeats", "2")),
    ScriptRun("workers-vnc", ("{python}", "benchmarks/workers.py", "--work", "{work}", "-o", "{output}"),
              requires=("scaling-vnc",)),
    # eight blocks: on an idle machine a four-block volume leaves the dask workers' start-up costs visible
    ScriptRun("workers-vnc-8x", ("{python}", "benchmarks/workers.py", "--work", "{work}", "-o", "{output}",
                                 "--size", "8"), requires=("scaling-vnc",)),
    ScriptRun("throughput-vnc-maester-cpu",
              ("{python}", "benchmarks/throughput.py", "{results}/vnc-maester-cpu-native/model.pt",
               "-o", "{output}", "--dataset", "vnc", "--crop", "1", "384", "384", "--device", "cpu"),
              requires=("vnc-maester-cpu-native",)),
    ScriptRun("linear-probe-vnc",
              ("{python}", "benchmarks/linear_probe.py", "--dataset", "vnc", "--slices", "0", "1",
               "--method", "baseline",
               "--method", "maester", "--model", "{results}/vnc-maester-cpu-native/model.pt", "--options", ES40,
               "--method", "his4mae", "--model", "{results}/vnc-his4mae-cpu-native/model.pt", "--options", ES40),
              output_file="linear-probe.txt", stdout=True,
              requires=("vnc-maester-cpu-native", "vnc-his4mae-cpu-native")),
    *(_gpu(dataset, method) for dataset in NATIVE_PIXEL_NM for method in ("maester", "his4mae")),
    # superpixel graphs on filter-bank features: SCCS, CS²C and the two baselines, then the ablations
    *(_graph(dataset, clusterer) for dataset in NATIVE_PIXEL_NM
      for clusterer in ("sccs", "cs2c", "cs2c-spa", "superpixel-kmeans", "spectral")),
    # the same clusterers on the features of the his4mae encoder trained at the same pixel size
    *(_graph(dataset, clusterer, encoder="his4mae") for dataset in NATIVE_PIXEL_NM
      for clusterer in ("sccs", "cs2c", "cs2c-spa", "superpixel-kmeans", "spectral")),
    *(_graph("vnc", clusterer, adjacency=0.0) for clusterer in ("sccs", "spectral")),
    _graph("vnc", "sccs", trace_weight=1.0),
    # the papers' three graph convolutions (the default is one hop), and 4x the native pixel size (100-px
    # superpixels four times the area), where the graph clusterers score best on a few vnc sections
    *(_graph("vnc", clusterer, hops=3.0) for clusterer in ("sccs", "cs2c")),
    # one hop against three over two more seeds (the networks' and k-means' draws), where vnc's seed 0 favoured
    # three, and on cdeep3m-mito
    _graph("cdeep3m-mito", "sccs", hops=3.0),
    *(_graph(dataset, "sccs", seed=seed, **hops) for dataset in NATIVE_PIXEL_NM for seed in (1, 2)
      for hops in ({}, {"hops": 3.0})),
    *(_graph("vnc", clusterer, scale=4) for clusterer in ("sccs", "cs2c", "spectral", "superpixel-kmeans")),
    # kappa 0.5 set explicitly (measured before it became the default; the papers' 2 was the default then)
    *(_graph("vnc", "sccs", scale=scale, kappa=0.5) for scale in (4, 2)),
    # pixel k-means on filter-bank features plus their means and spreads over ~100-px superpixels
    # (the features' context option), at twice and four times the native pixel size
    *(BenchmarkRun(f"{dataset}-baseline-context100-{scale * native:g}nm", "cpu", dataset, "baseline",
                   round(scale * native, 6), options={"context": "100"})
      for dataset, native in NATIVE_PIXEL_NM.items() for scale in (2, 4)),
    # Han et al.'s VAE, 2D and 3D, at 16 nm
    *(_han(dataset, method) for dataset in NATIVE_PIXEL_NM for method in ("han-vae-2d", "han-vae")),
    # their stride cost (latents at strides 1, 2, 4 on a crop) and the paper's Fig. 3 (t-SNE of two subspaces)
    *(ScriptRun(f"{method}-stride-vnc",
                ("{python}", "benchmarks/han_vae_speed.py", f"{{results}}/vnc-{method}-cpu-16nm/model.pt", "-o",
                 "{output}", "--dataset", "vnc", "--crop", "10", "256", "256"),
                requires=(f"vnc-{method}-cpu-16nm",)) for method in ("han-vae-2d", "han-vae")),
    *(ScriptRun(f"{method}-embedding-vnc",
                ("{python}", "benchmarks/han_vae_embedding.py", f"{{results}}/vnc-{method}-cpu-16nm/model.pt", "-o",
                 f"docs/figures/{method}-embedding-vnc.png", "--results", "{output}", "--dataset", "vnc"),
                requires=(f"vnc-{method}-cpu-16nm",)) for method in ("han-vae-2d", "han-vae")),
)


def select(runs: tuple, section: str, only: list[str] | None) -> tuple[list, set[str]]:
    """The runs of ``section`` (``all``: both) matching a glob of ``only``, and the runs they require.

    Returns
    -------
    runs : list
        The selected runs and those they require, in the order of ``runs``.
    asked : set of str
        Names of the selected runs (what ``--force`` reruns; a required run
        is only run when it has no results).

    Raises
    ------
    SystemExit
        When a glob matches no run of the section (a typo would otherwise run nothing, silently).
    """
    chosen = [run for run in runs if section in ("all", run.section)]
    for pattern in only or ():
        if not any(fnmatch.fnmatchcase(run.name, pattern) for run in chosen):
            raise SystemExit(f"--only {pattern!r} matches no run of section {section!r}; see --list")
    if only:
        chosen = [run for run in chosen if any(fnmatch.fnmatchcase(run.name, p) for p in only)]
    asked = {run.name for run in chosen}
    needed = asked.union(*(getattr(run, "requires", ()) for run in chosen))
    return [run for run in runs if run.name in needed], asked


def print_plan(runs: list, results: Path) -> None:
    """Each run's name, section, state and arguments (or command)."""
    for run in runs:
        state = "done" if run.result_file(results).exists() else "to run"
        print(f"{run.name}  [{run.section}, {state}]\n    {run.describe()}")


def execute(runs: list, results: Path, *, force: set[str], tiny: bool, data_root: Path | None,
            work: Path) -> list[str]:
    """Run every run without results (and those in ``force``); return the names of the failed ones."""
    failed = []
    for run in runs:
        if tiny and isinstance(run, ScriptRun):
            print(f"{run.name}: not run with --tiny (it needs the real data)", flush=True)
            continue
        if run.result_file(results).exists() and run.name not in force:
            print(f"{run.name}: done, skipped", flush=True)
            continue
        print(f"{run.name}: running {run.describe()}", flush=True)
        started = time.perf_counter()
        try:
            run.run(results, data_root, work)
        except Exception:  # one failed run must not stop hours of others; they are listed at the end
            traceback.print_exc()
            failed.append(run.name)
            continue
        print(f"{run.name}: finished in {time.perf_counter() - started:.0f} s", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--section", choices=(*SECTIONS, "all"), default="cpu",
                        help="which runs: cpu (default; with the benchmark scripts), gpu (needs CUDA) or all")
    parser.add_argument("--only", nargs="+", metavar="NAME_GLOB", help="only the runs whose names match")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    parser.add_argument("--force", action="store_true", help="rerun the selected runs that have results")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "results.md", help="Markdown page to render")
    parser.add_argument("--data-root", type=Path, help="where the datasets live (default: orgaseg's rule)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "orgaseg-reproduce",
                        help="scratch folder of the scaling and workers scripts")
    parser.add_argument("--tiny", action="store_true",
                        help="check the plan's logic: a small phantom, tiny presets, a few steps, CPU")
    parser.add_argument("--render-only", action="store_true", help="only render the docs page")
    args = parser.parse_args(argv)
    results = args.results.resolve()

    failed = []
    if not args.render_only:
        runs, asked = select(RUNS, args.section, args.only)
        if args.tiny:
            runs = [run.tiny() if isinstance(run, BenchmarkRun) else run for run in runs]
        if args.list:
            print_plan(runs, results)
            return 0
        failed = execute(runs, results, force=asked if args.force else set(), tiny=args.tiny,
                         data_root=args.data_root, work=args.work)
    if results.is_dir():
        render_results(results, args.docs)
        print(f"rendered {args.docs}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
