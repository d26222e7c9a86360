"""Print the README's results tables from benchmark ``results.json`` files.

Usage: python benchmarks/results_table.py RESULTS_DIR [RESULTS_DIR ...]
       python benchmarks/results_table.py --compare CLASS RESULTS_DIR [RESULTS_DIR ...]
Each table: per-class Dice (merge mode) for every K, the merge-mode means and the strict-mode mean.
With --compare: one table, a row per K, for each run the merge-mode Dice of CLASS and the merge and
strict mean Dice.
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


def comparison(records: list[dict], organelle: str) -> str:
    """A row per K; for each run the merge Dice of ``organelle``, the merge mean and the strict mean."""
    header = "| K | " + " | ".join(f"{r['method']} {organelle} | {r['method']} mean (merge) | {r['method']} mean (strict)"
                                   for r in records) + " |"
    lines = [header, "|---|" + "---|" * (3 * len(records))]
    for k in records[0]["ks"]:
        cells = []
        for record in records:
            merge, strict = record["results"][str(k)]["merge"], record["results"][str(k)]["strict"]
            cells.append(f"{merge['per_class'][organelle]['dice']:.3f} | {merge['mean_dice']:.3f} | "
                         f"{strict['mean_dice']:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not arguments or arguments[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if arguments else 2)
    if arguments[:1] == ["--compare"]:
        organelle, folders = arguments[1], arguments[2:]
        print(comparison([json.loads((Path(d) / "results.json").read_text()) for d in folders], organelle))
    else:
        print("\n\n".join(table(json.loads((Path(d) / "results.json").read_text())) for d in arguments))
