"""Put the cluster panels of several benchmark overlay figures side by side, to compare methods by eye.

Each ``orgaseg benchmark`` run writes ``figures/overlay_kK.png``: raw, clusters, clusters over raw,
prediction mapped to classes, reference. This script takes the raw panel of the first figure and the
cluster panel of every figure, and writes them in one row with the given titles.

Usage: python benchmarks/cluster_panels.py -o OUT.png RUN_DIR:TITLE [RUN_DIR:TITLE ...] [-k 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage import io


def panels(figure: np.ndarray) -> list[np.ndarray]:
    """The image panels of an overlay figure: runs of non-white columns and rows, at least 50 px long."""
    content = ~(figure[..., :3] > 245).all(axis=2)
    def spans(mask):
        edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
        return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a > 50]
    # bright EM pixels are white too: a row or column belongs to a panel when most of it is not white
    top, bottom = max(spans(content.mean(axis=1) > 0.5), key=lambda r: r[1] - r[0])
    columns = spans(content[top:bottom].mean(axis=0) > 0.5)
    return [figure[top:bottom, a:b, :3] for a, b in columns]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR:TITLE")
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    images, titles = [], []
    for item in args.runs:
        folder, _, title = item.partition(":")
        found = panels(io.imread(Path(folder) / "figures" / f"overlay_k{args.k}.png"))
        if not images:
            images.append(found[0])
            titles.append("raw")
        images.append(found[1])
        titles.append(title or Path(folder).name)
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.4))
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"K = {args.k} clusters, vnc stack1 z = 10", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
