#!/usr/bin/env bash
# MAESTER, cpu preset, on vnc: train on stack2 (35 minutes on 2 CPU cores), then score stack1 for
# K = 4..10 with cover-and-stride (m = 16: every token kept, the budget a 2-core CPU allows for
# 21 M pixels) and with the stride-only ablation. Usage: benchmarks/maester.sh [OUT] [DATASET]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-output}
dataset=${2:-vnc}
case "$dataset" in
    vnc) train=../shared/data/vnc/stack2/raw; voxel="50 4.6 4.6" ;;
    cdeep3m-mito) train=../shared/data/cdeep3m-mito/testset; voxel="40 5.9 5.9" ;;
    *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
ckpt=runs/maester-$dataset-cpu.pt
if [ ! -f "$ckpt" ]; then
    orgaseg train "$train" --method maester --preset cpu --minutes 35 --voxel-size $voxel -o "$ckpt" --quiet
fi
orgaseg benchmark --dataset "$dataset" --method maester --model "$ckpt" --keep 16 -k 4-10 \
    -o "$out/$dataset-maester-cpu-keep16" --overwrite --quiet
orgaseg benchmark --dataset "$dataset" --method maester --model "$ckpt" --features stride-only -k 4-10 \
    -o "$out/$dataset-maester-cpu-stride-only" --overwrite --quiet
