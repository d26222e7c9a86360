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
        [--pixel-size NM|native]

Every strategy goes through the public ``orgaseg.compute_features`` (the
features a segmentation block computes for the crop, read with its halo), so
each timed call also holds that call's fixed setup (loading the checkpoint,
the intensity-normalisation sample: about 0.1-0.2 s on vnc). Fields of view are
counted as the encoder receives them (the batch sizes entering the ViT's patch
embedding, its only convolution), which is the strategies' exact plan.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import orgaseg
from orgaseg.cluster import fit_kmeans
from orgaseg.environment import environment_record
from orgaseg.models.encoder import load_encoder
from orgaseg.models.vit import encoder_flops

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


def encoder_only_rate(encoder, device: torch.device, batch: int = 256, repeats: int = 5) -> float:
    """Fields of view per second of the bare encoder on full batches."""
    fovs = torch.rand(batch, 1, encoder.fov, encoder.fov, device=device)
    with torch.inference_mode():
        encoder.encode(fovs)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            encoder.encode(fovs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def stages(strategy: str, method: str, checkpoint: str) -> dict:
    """The ``orgaseg.compute_features`` arguments of a strategy (``NAME[:VALUE]``)."""
    name, _, value = strategy.partition(":")
    if name == "filter-bank":
        return {"method": "baseline"}
    common = {"method": method, "model": checkpoint, "features": name}
    if name == "cover-stride":
        return {**common, "options": {"keep": int(value or 4), "batch_size": 256}}
    if name == "stride-only":
        return {**common, "options": {"batch_size": 256}}
    if name == "expand-stride":
        return {**common, "options": {"stride": int(value or 40), "batch_size": 256}}
    raise SystemExit(f"unknown strategy {strategy!r}")


class FieldOfViewCounter:
    """Counts the fields of view the encoder receives while active: the batch sizes entering a ``Conv2d``
    (a ViT's patch embedding, the only convolution of the encoders orgaseg trains)."""

    def __init__(self) -> None:
        self.count = 0
        self._handle = None

    def _hook(self, module, inputs) -> None:
        if isinstance(module, torch.nn.Conv2d):
            self.count += int(inputs[0].shape[0])

    def __enter__(self) -> "FieldOfViewCounter":
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", required=True, help="results folder")
    parser.add_argument("--dataset", default="vnc")
    parser.add_argument("--crop", type=int, nargs=3, default=(2, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("-k", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    parser.add_argument("--pixel-size", default=None, metavar="NM|native",
                        help="working pixel size (default: the checkpoint's, else the input's own)")
    args = parser.parse_args()

    device = torch.device(args.device)
    data = orgaseg.load_dataset(args.dataset)
    item = data.evaluation[0]
    encoder = load_encoder(args.checkpoint, device.type)
    record = encoder.record
    config = record["model_config"]
    fov_flops = encoder_flops(config["img_size"], config["patch_size"], config["in_chans"], config["embed_dim"],
                              config["depth"], config["mlp_ratio"])
    matmul = matmul_flops_per_s(device)
    bare_rate = encoder_only_rate(encoder, device)
    crop = tuple(min(c, s) for c, s in zip(args.crop, item.raw.shape))
    region = tuple(slice(0, c) for c in crop)
    reference = item.reference.read(region)

    rows = []
    for strategy in args.strategies:
        arguments = stages(strategy, record["method"], args.checkpoint)
        with FieldOfViewCounter() as counter:
            start = time.perf_counter()
            features = orgaseg.compute_features(item.raw, region, pixel_size=args.pixel_size, device=device.type,
                                                seed=0, **arguments)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        assert features.shape[:3] == crop
        voxels = int(np.prod(crop))
        row = {"strategy": strategy, "seconds": round(seconds, 3), "voxels_per_s": round(voxels / seconds, 1)}
        if "model" in arguments:
            fovs = counter.count
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

    environment = environment_record()
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
        "pixel_size": args.pixel_size, "timing_note": "seconds include compute_features' fixed setup "
        "(checkpoint load, normalisation sample)",
        "environment": environment, "machine": environment["machine"], "device": str(device),
        "orgaseg_version": orgaseg.__version__,
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
