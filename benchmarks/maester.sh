#!/usr/bin/env bash
# MAESTER, cpu preset: train for a fixed number of steps (vnc: 3,534; cdeep3m-mito: 1,912), then score the
# evaluation volumes for K = 4..10 with cover-and-stride (m = 16: every token kept, the budget a 2-core
# CPU allows for 21 M pixels), with the stride-only ablation and with expand-stride (S = 40).
# Usage: benchmarks/maester.sh [OUT] [DATASET]
#
# The step counts are what the old wall-clock budgets (--minutes 35 on vnc, 20 on cdeep3m-mito, on the
# 2-core AMD EPYC machine) gave: runs/maester-vnc-cpu.pt and runs/maester-cdeep3m-mito-cpu.pt record
# 3534 and 1912 steps (the "training" entries of benchmarks/results/vnc-maester-cpu-keep16/results.json
# and benchmarks/results/cdeep3m-mito-maester-cpu-es40/results.json). Fixed steps, unlike minutes, give
# the same model whatever else the machine is doing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-output}
dataset=${2:-vnc}
case "$dataset" in
    vnc) train=../shared/data/vnc/stack2/raw; voxel="50 4.6 4.6"; steps=3534 ;;
    cdeep3m-mito) train=../shared/data/cdeep3m-mito/testset; voxel="40 5.9 5.9"; steps=1912 ;;
    *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
ckpt=runs/maester-$dataset-cpu.pt
if [ ! -f "$ckpt" ]; then
    orgaseg train "$train" --method maester --preset cpu --steps $steps --voxel-size $voxel -o "$ckpt" --quiet
fi
orgaseg benchmark --dataset "$dataset" --method maester --model "$ckpt" --keep 16 -k 4-10 \
    -o "$out/$dataset-maester-cpu-keep16" --overwrite --quiet
orgaseg benchmark --dataset "$dataset" --method maester --model "$ckpt" --features stride-only -k 4-10 \
    -o "$out/$dataset-maester-cpu-stride-only" --overwrite --quiet
orgaseg benchmark --dataset "$dataset" --method maester --model "$ckpt" --features expand-stride --stride 40 \
    --sample-size 200000 -k 4-10 -o "$out/$dataset-maester-cpu-es40" --overwrite --quiet
