#!/usr/bin/env bash
# HiS4MAE benchmark: maester, his4mae and sdae-recon (cpu preset) trained with the same wall-clock budget, as fixed steps
# (benchmarks/his4mae_train.sh), scored with the same dense features (expand-stride, S = 40) and the same
# k-means sample (200,000 voxels), K = 4..10; with "curve", also Dice against training time from the
# snapshots (K = 6, S = 80, first 5 slices of each evaluation volume, to fit a 2-core CPU's budget).
# Usage: benchmarks/his4mae.sh OUT DATASET MINUTES [curve]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?output folder}
dataset=${2:?dataset}
minutes=${3:?training minutes per model}
bash benchmarks/his4mae_train.sh "$dataset" "$minutes"
for method in maester his4mae sdae-recon; do
    orgaseg benchmark --dataset "$dataset" --method "$method" --model "runs/$method-$dataset-cpu-${minutes}min.pt" \
        --features expand-stride --stride 40 --sample-size 200000 -k 4-10 \
        -o "$out/$dataset-$method-cpu-${minutes}min-es40" --overwrite --quiet
done
if [ "${4:-}" = curve ]; then
    python benchmarks/training_curve.py runs/{maester,his4mae,sdae-recon}-$dataset-cpu-${minutes}min.pt \
        --dataset "$dataset" -k 6 --stride 80 --slices 5 -o "$out/$dataset-his4mae-curve"
fi
