"""Dense-feature throughput in one run: filter bank, cover-and-stride, stride-only, expand-stride.

For one crop of a benchmark dataset's evaluation volume and one trained ViT
checkpoint, every strategy computes the crop's features (read with its halo,
as the block runner does), timed; the features are clustered (k-means, K
given, 50,000-voxel sample) and scored against the reference (merge mode).
The encoder's FLOPs per field of view are counted from the architecture; the
achieved FLOP/s (encoder FLOPs actually spent / wall time) is compared with a
plain fp32 matrix product's FLOP/s measured in the same run, and with the
encoder alone on full batches.

Usage:
    python benchmarks/throughput.py CHECKPOINT -o OUT [--dataset vnc] [--crop Z Y X] [--device cpu]
        [--strategies filter-bank cover-stride:4 stride-only expand-stride:80 expand-stride:40 expand-stride:20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import orgaseg
from orgaseg.benchmark import machine_description
from orgaseg.cluster.kmeans import fit_kmeans
from orgaseg.datasets import load_dataset
from orgaseg.features.cover_stride import CoverStride, StrideOnly
from orgaseg.features.expand_stride import ExpandStride
from orgaseg.io import compute_normalization
from orgaseg.methods.registry import get_method
from orgaseg.methods.vit_method import load_trained
from orgaseg.models.vit import encoder_flops
from orgaseg.pipeline.blocks import make_blocks
from orgaseg.pipeline.runner import block_features

DEFAULT_STRATEGIES = ["filter-bank", "cover-stride:4", "stride-only", "expand-stride:80", "expand-stride:40",
                      "expand-stride:20"]


def matmul_flops_per_s(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a plain fp32 ``n x n`` matrix product (best of ``repeats``)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def encoder_only_rate(model, device: torch.device, batch: int = 256, repeats: int = 5) -> float:
    """Fields of view per second of the bare encoder on full batches."""
    fovs = torch.rand(batch, 1, model.config.img_size, model.config.img_size, device=device)
    with torch.inference_mode():
        model.encode(fovs)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model.encode(fovs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def build(strategy: str, model, volume, device: torch.device):
    name, _, value = strategy.partition(":")
    if name == "filter-bank":
        return get_method("baseline").build_features(volume, None, None, device.type)
    config = model.config
    common = dict(fov=config.img_size, patch=config.patch_size, n_features=config.embed_dim, batch_size=256,
                  device=device.type)
    if name == "cover-stride":
        return CoverStride(model.encode, keep=int(value or 4), **common)
    if name == "stride-only":
        return StrideOnly(model.encode, **common)
    if name == "expand-stride":
        return ExpandStride(model.encode, stride=int(value or 40), **common)
    raise SystemExit(f"unknown strategy {strategy!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", required=True, help="results folder")
    parser.add_argument("--dataset", default="vnc")
    parser.add_argument("--crop", type=int, nargs=3, default=(2, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("-k", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    args = parser.parse_args()

    device = torch.device(args.device)
    data = load_dataset(args.dataset)
    item = data.evaluation[0]
    model, record = load_trained(args.checkpoint, device.type)
    fov_flops = encoder_flops(model.config.img_size, model.config.patch_size, model.config.in_chans,
                              model.config.embed_dim, model.config.depth, model.config.mlp_ratio)
    matmul = matmul_flops_per_s(device)
    bare_rate = encoder_only_rate(model, device)
    normalization = compute_normalization(item.raw, seed=0)
    crop = tuple(min(c, s) for c, s in zip(args.crop, item.raw.shape))
    region = tuple(slice(0, c) for c in crop)
    reference = item.reference.read(region)

    rows = []
    for strategy in args.strategies:
        extractor = build(strategy, model, item.raw, device)
        block = make_blocks(item.raw.shape, crop, extractor.halo)[0]
        assert block.region == region
        start = time.perf_counter()
        features = block_features(item.raw, normalization, extractor, block)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        voxels = int(np.prod(crop))
        row = {"strategy": strategy, "seconds": round(seconds, 3), "voxels_per_s": round(voxels / seconds, 1)}
        if hasattr(extractor, "n_fields_of_view"):
            read_shape = tuple(r.stop - r.start for r in block.read_region)
            origin = tuple(r.start for r in block.read_region)
            fovs = extractor.n_fields_of_view(read_shape, origin)
            row.update(fields_of_view=fovs, encoder_flops_per_voxel=round(fov_flops * fovs / voxels, 1),
                       achieved_flops_per_s=fov_flops * fovs / seconds,
                       fraction_of_matmul=round(fov_flops * fovs / seconds / matmul, 3))
        flat = features.reshape(-1, features.shape[-1])
        sample = flat[np.random.default_rng(0).choice(len(flat), size=min(50_000, len(flat)), replace=False)]
        labels = fit_kmeans(sample, args.k, seed=0).predict(features)
        report = orgaseg.evaluate(labels, reference, classes=data.classes, background=data.background).to_dict()
        merge = report["merge"]
        row["merge_mean_dice"] = round(merge["mean_dice"], 3)
        row["merge_dice"] = {c: (round(v["dice"], 3) if v else None) for c, v in merge["per_class"].items()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    cover = next((r for r in rows if r["strategy"].startswith("cover-stride")), None)
    for row in rows:
        if cover is not None:
            row["speed_vs_cover_stride"] = round(row["voxels_per_s"] / cover["voxels_per_s"], 2)
    result = {
        "dataset": args.dataset, "volume": item.name, "crop": list(crop), "k": args.k,
        "checkpoint": str(args.checkpoint), "method": record["method"], "preset": record["preset"],
        "encoder_flops_per_fov": fov_flops, "matmul_flops_per_s": matmul,
        "encoder_only": {"fovs_per_s": round(bare_rate, 1), "flops_per_s": bare_rate * fov_flops,
                         "fraction_of_matmul": round(bare_rate * fov_flops / matmul, 3)},
        "machine": machine_description(), "device": str(device), "orgaseg_version": orgaseg.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        f"# Dense-feature throughput: {result['method']} ({result['preset']} preset) on {result['dataset']} "
        f"{result['volume']}, crop {' x '.join(map(str, result['crop']))}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch threads {machine.get('torch_threads')}, "
        f"device {result['device']}{', GPU ' + machine['gpu'] if machine.get('gpu') else ''}. "
        f"Encoder: {result['encoder_flops_per_fov'] / 1e6:.0f} MFLOP per field of view; fp32 matmul "
        f"{result['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s; bare encoder {result['encoder_only']['fovs_per_s']:.0f} "
        f"fields of view/s = {result['encoder_only']['fraction_of_matmul']:.2f} of the matmul rate. "
        f"Dice: k-means K = {result['k']} on the crop, merge mode.",
        "",
        "| strategy | voxels/s | x cover-stride | encoder FLOP/voxel | achieved / matmul FLOP/s | mean Dice | "
        "mitochondria Dice |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        mito = row["merge_dice"].get("mitochondria")
        lines.append(
            f"| {row['strategy']} | {row['voxels_per_s']:.0f} | {row.get('speed_vs_cover_stride', '-')} | "
            f"{row.get('encoder_flops_per_voxel', '-')} | {row.get('fraction_of_matmul', '-')} | "
            f"{row['merge_mean_dice']:.3f} | {'-' if mito is None else f'{mito:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
