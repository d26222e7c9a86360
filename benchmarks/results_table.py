"""Print the README's results tables from benchmark ``results.json`` files.

Usage: python benchmarks/results_table.py RESULTS_DIR [RESULTS_DIR ...]
Each table: per-class Dice (merge mode) for every K, the merge-mode means and the strict-mode mean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(record: dict) -> str:
    classes = record["classes"]
    seg, training = record["segmentation"], record["training"]
    features = record.get("features", {})
    described = ", ".join(f"{k} {v}" for k, v in features.items() if k in ("kind", "mode", "keep", "stride", "scales_nm"))
    trained = "no training" if not training.get("steps") else (
        f"preset {training['preset']}, {training['steps']} steps x {training['batch_size']} in {training['wall_s']:.0f} s "
        f"on {training['device']}")
    lines = [
        f"**{record['method']} on {record['dataset']}** ({trained}; features: {described}; segmentation "
        f"{seg['wall_s']:.0f} s for all K, {seg['voxels_per_s'] / 1e3:.1f} k voxels/s; peak {record['peak_memory_mb']:.0f} MiB)",
        "",
        "| K | " + " | ".join(classes) + " | mean Dice (merge) | organelle mean (merge) | mean Dice (strict) |",
        "|---|" + "---|" * (len(classes) + 3),
    ]
    for k in record["ks"]:
        merge, strict = record["results"][str(k)]["merge"], record["results"][str(k)]["strict"]
        dice = " | ".join(f"{merge['per_class'][c]['dice']:.3f}" for c in classes)
        lines.append(f"| {k} | {dice} | {merge['mean_dice']:.3f} | {merge['mean_dice_organelles']:.3f} | "
                     f"{strict['mean_dice']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(json.loads((Path(d) / "results.json").read_text())) for d in sys.argv[1:]))
