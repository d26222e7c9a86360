"""Time one region through SCCS (features / superpixels + graph / clustering) and through MAESTER's pixel road.

The region is the central ``--crop`` x ``--crop`` working pixels of one vnc section at 9.2 nm (default 256 px,
2.4 um; the papers' regions are 560 x 560 px at 16 nm, 9 um, more than a vnc section holds). SCCS, twice:
on filter-bank features and on expand-stride features (S = 40) of the ViT below (the papers' SCCS reads
a ViT this way); then SLIC superpixels and the graph, the trained networks' assignment (fitted on the
same section first, ``cpu`` preset; the fit is not timed). MAESTER: cover-and-stride features of a
``cpu``-preset ViT (trained one step: the cost of a forward pass does not depend on training) and the
k-means assignment of every pixel. Each stage is timed ``--repeats`` times; the fastest is kept.

    python benchmarks/graph_speed.py -o benchmarks/results/graph-speed-vnc
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import orgaseg
from orgaseg.environment import environment_record


def fastest(function, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def time_sccs(extractor, raw: np.ndarray, voxel_size, repeats: int) -> tuple[dict, list]:
    """Seconds per stage of SCCS on ``extractor``'s features of ``raw`` (the networks' fit is not timed)."""
    from orgaseg.cluster.graph_clusterers import GraphFit
    from orgaseg.cluster.superpixels import block_superpixels

    t_features, features = fastest(lambda: extractor(raw), repeats)
    fit = GraphFit("sccs", 8, 0, {"preset": "cpu"})
    fit.add(features, raw, voxel_size)
    clusterer = fit.finish()
    options = clusterer.graph_options
    t_superpixels, regions = fastest(lambda: block_superpixels(
        features, raw, voxel_size[1], region_nm=options.region_nm, superpixel_px=options.superpixel_px,
        compactness=options.compactness), repeats)
    t_graph, graphs = fastest(lambda: [options.graph(r, clusterer.mean, clusterer.scale) for r in regions], repeats)
    t_cluster, _ = fastest(lambda: [clusterer.assign(g) for g in graphs], repeats)
    total = t_features + t_superpixels + t_graph + t_cluster
    seconds = {"features": t_features, "superpixels": t_superpixels, "graph": t_graph, "clustering": t_cluster,
               "total": total}
    return {name: round(value, 3) for name, value in seconds.items()}, regions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--pixel-size", type=float, default=9.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crop", type=int, default=256, help="side of the region in working pixels")
    args = parser.parse_args(argv)

    from orgaseg.features import get_features
    from orgaseg.io.normalize import compute_normalization
    from orgaseg.pipeline.resample import resampled_volume

    data = orgaseg.load_dataset("vnc", data_root=args.data_root)
    volume = data.evaluation[0].raw
    section = resampled_volume(volume, args.pixel_size)
    ny, nx = section.shape[1:]
    y0, x0 = max(0, (ny - args.crop) // 2), max(0, (nx - args.crop) // 2)
    raw = section.read((slice(0, 1), slice(y0, y0 + args.crop), slice(x0, x0 + args.crop))).astype(np.float32)
    raw = compute_normalization(volume, seed=0).apply(raw)
    voxel_size = tuple(section.voxel_size)
    bank = get_features("filter-bank").build(None, voxel_size, {}, "cpu")

    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(work) / "maester.pt"
        orgaseg.train("maester", data.train, checkpoint, preset="cpu", steps=1, device="cpu",
                      pixel_size=args.pixel_size)
        from orgaseg.models.encoder import load_encoder

        encoder = load_encoder(checkpoint, "cpu")
    expand = get_features("expand-stride").build(encoder, voxel_size, {"stride": 40}, "cpu")
    sccs_bank, regions = time_sccs(bank, raw, voxel_size, args.repeats)
    sccs_vit, _ = time_sccs(expand, raw, voxel_size, args.repeats)

    cover = get_features("cover-stride").build(encoder, voxel_size, {}, "cpu")
    t_pixel_features, pixel_features = fastest(lambda: cover(raw), 1)
    sample = pixel_features.reshape(-1, pixel_features.shape[-1])
    chosen = np.random.default_rng(0).choice(len(sample), min(len(sample), 20_000), replace=False)
    kmeans = orgaseg.cluster.fit_kmeans(sample[chosen], 8, seed=0)
    t_pixel_cluster, _ = fastest(lambda: kmeans.predict(pixel_features), args.repeats)
    maester_total = t_pixel_features + t_pixel_cluster
    record = {
        "region": {"shape": list(raw.shape[1:]), "pixel_size_nm": args.pixel_size, "dataset": "vnc",
                   "volume": data.evaluation[0].name, "superpixels": int(sum(r.n for r in regions)),
                   "regions": len(regions)},
        "sccs_s": sccs_bank,
        "sccs_vit_s": sccs_vit,
        "maester_s": {"features": round(t_pixel_features, 3), "clustering": round(t_pixel_cluster, 3),
                      "total": round(maester_total, 3)},
        "ratio_maester_over_sccs": round(maester_total / sccs_bank["total"], 1),
        "ratio_maester_over_sccs_vit": round(maester_total / sccs_vit["total"], 1),
        "repeats": args.repeats,
        "environment": environment_record(),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "environment"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
