"""The 3D filter bank's Hessian eigenvalues: its closed form against ``numpy.linalg.eigvalsh``, in one run.

On the demo's phantom (``orgaseg demo``: 64 x 256 x 256 voxels at 10 nm, seed 0), the scale-normalised
Hessian of a Gaussian at each of the filter bank's default scales that filters in 3D is computed once
(scipy); then, per scale, its per-voxel eigenvalues are computed both ways, each timed over
``--repeats`` calls (the fastest is kept): the filter bank's closed form
(``orgaseg.features.filterbank._sorted_eigenvalues``), and ``eigvalsh`` on the assembled 3 x 3 matrices,
largest first, as the filter bank computed them before. The largest difference between the two, over
the largest absolute eigenvalue of the voxel, is reported too. The whole filter bank on the phantom
(``orgaseg.compute_features``) is timed once for scale.

Usage:
    python benchmarks/eigenvalue_speed.py -o OUT [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import orgaseg
from orgaseg.datasets import load_dataset
from orgaseg.environment import environment_record
from orgaseg.features.filterbank import DEFAULT_SCALES_NM, _sorted_eigenvalues
from orgaseg.io.partial import write_atomic

SHAPE = (64, 256, 256)
VOXEL_NM = 10.0


def hessian(image: np.ndarray, sigma: float) -> dict:
    """Scale-normalised second derivatives ``{(a, b): H_ab}`` of a Gaussian of ``sigma`` voxels, float32."""
    out = {}
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            out[(a, b)] = (ndi.gaussian_filter(image, sigma, order=order, output=np.float32) * sigma**2)
    return out


def eigvalsh_largest_first(hess: dict) -> list[np.ndarray]:
    """Per-voxel eigenvalues through numpy's LAPACK call, largest first."""
    matrix = np.empty(hess[(0, 0)].shape + (3, 3), dtype=np.float32)
    for (a, b), value in hess.items():
        matrix[..., a, b] = value
        matrix[..., b, a] = value
    eigenvalues = np.linalg.eigvalsh(matrix)
    return [eigenvalues[..., i] for i in (2, 1, 0)]


def fastest(function, hess: dict, repeats: int) -> tuple[float, list[np.ndarray]]:
    """The fastest of ``repeats`` calls of ``function(hess)``, and its eigenvalues."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = list(function(hess))
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for results.json and results.md")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each way (the fastest is kept)")
    args = parser.parse_args()

    item = load_dataset("phantom", shape=SHAPE, voxel_size=(VOXEL_NM,) * 3, seed=0).evaluation[0]
    image = orgaseg.io.compute_normalization(item.raw).apply(item.raw.read())
    rows = []
    for scale in DEFAULT_SCALES_NM:
        sigma = scale / VOXEL_NM
        if sigma < 0.5:  # below half a voxel the filter bank leaves a scale out
            continue
        hess = hessian(image, sigma)
        closed_s, closed = fastest(lambda h: _sorted_eigenvalues(h, [0, 1, 2]), hess, args.repeats)
        lapack_s, lapack = fastest(eigvalsh_largest_first, hess, args.repeats)
        largest = np.maximum(np.abs(np.stack(lapack)).max(axis=0), np.finfo(np.float32).tiny)
        difference = max(float((np.abs(c - e) / largest).max()) for c, e in zip(closed, lapack))
        rows.append({"scale_nm": scale, "closed_form_s": round(closed_s, 3), "eigvalsh_s": round(lapack_s, 3),
                     "ratio": round(lapack_s / closed_s, 2), "largest_relative_difference": difference})
        print(f"{scale:g} nm: closed form {closed_s:.3f} s, eigvalsh {lapack_s:.3f} s ({lapack_s / closed_s:.1f}x); "
              f"largest relative difference {difference:.2e}")
    started = time.perf_counter()
    orgaseg.compute_features(item.raw)
    filter_bank_s = time.perf_counter() - started
    record = {"phantom": {"shape": list(SHAPE), "voxel_size_nm": VOXEL_NM, "seed": 0}, "repeats": args.repeats,
              "scales": rows, "filter_bank_s": round(filter_bank_s, 2), "environment": environment_record()}
    args.output.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output / "results.json", json.dumps(record, indent=2) + "\n")
    lines = ["# Hessian eigenvalues: closed form against eigvalsh", "",
             (f"Phantom {' x '.join(map(str, SHAPE))} at {VOXEL_NM:g} nm; fastest of {args.repeats} calls each; "
              f"commit {record['environment'].get('git', {}).get('commit', 'not recorded')}."), "",
             "| scale (nm) | closed form (s) | eigvalsh (s) | ratio | largest relative difference |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['scale_nm']:g} | {r['closed_form_s']} | {r['eigvalsh_s']} | {r['ratio']} | "
              f"{r['largest_relative_difference']:.1e} |" for r in rows]
    lines += ["", f"The whole filter bank on the phantom (`orgaseg.compute_features`): {filter_bank_s:.1f} s."]
    write_atomic(args.output / "results.md", "\n".join(lines) + "\n")
    print(f"wrote {args.output}/results.json and results.md")


if __name__ == "__main__":
    main()
