#!/usr/bin/env bash
# The classical floor on the two real datasets, K = 4..10, both matching modes.
# Writes bench-output/<dataset>-baseline/{results.json,results.md,figures/}, plus
# vnc at the scales of the floor quoted in ../shared/data/README.md (sigma 1-8 px = 4.6-36.8 nm).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-output}
for dataset in vnc cdeep3m-mito; do
    orgaseg benchmark --dataset "$dataset" --method baseline -k 4-10 -o "$out/$dataset-baseline" --overwrite --quiet
done
orgaseg benchmark --dataset vnc --method baseline -k 4-10 --scales-nm 4.6 9.2 18.4 36.8 \
    -o "$out/vnc-baseline-floor-scales" --overwrite --quiet
