#!/usr/bin/env bash
# Why does the cpu MAESTER not beat the filter bank? Controls on vnc, all scored like the HiS4MAE
# comparison (expand-stride S = 40, 200,000-voxel k-means sample, K = 4..10):
#   - init: one optimiser step from the initialisation (the untrained encoder's features);
#   - plain: the 6-minute budget of benchmarks/his4mae_train.sh (585 steps) with the plain pixel loss
#     instead of the cpu preset's per-patch normalised one;
# then a linear probe (benchmarks/linear_probe.py) of the filter bank and every MAESTER model's features.
# Needs runs/maester-vnc-cpu.pt (benchmarks/maester.sh) and runs/maester-vnc-cpu-6min.pt
# (benchmarks/his4mae_train.sh vnc 6). Usage: benchmarks/maester_controls.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-output}
train=../shared/data/vnc/stack2/raw
voxel="50 4.6 4.6"
[ -f runs/maester-vnc-cpu-1step.pt ] || orgaseg train "$train" --method maester --preset cpu --steps 1 \
    --voxel-size $voxel -o runs/maester-vnc-cpu-1step.pt --quiet
[ -f runs/maester-vnc-cpu-6min-plain.pt ] || orgaseg train "$train" --method maester --preset cpu --steps 585 \
    --model-option norm_pix_loss=false --voxel-size $voxel -o runs/maester-vnc-cpu-6min-plain.pt --quiet
for name in 1step 6min-plain; do
    orgaseg benchmark --dataset vnc --method maester --model "runs/maester-vnc-cpu-$name.pt" \
        --features expand-stride --stride 40 --sample-size 200000 -k 4-10 \
        -o "$out/vnc-maester-cpu-$name-es40" --overwrite --quiet
done
es40=features=expand-stride,stride=40
python benchmarks/linear_probe.py --dataset vnc --slices 0 1 --method baseline \
    --method maester --model runs/maester-vnc-cpu.pt --options features=stride-only \
    --method maester --model runs/maester-vnc-cpu.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-1step.pt --options features=stride-only \
    --method maester --model runs/maester-vnc-cpu-1step.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-6min.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-6min-plain.pt --options $es40 \
    | tee "$out/linear-probe-vnc.txt"
