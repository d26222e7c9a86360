#!/usr/bin/env bash
# Why does the cpu MAESTER not beat the filter bank? Controls, all scored like the HiS4MAE comparison
# (expand-stride S = 40, 200,000-voxel k-means sample, K = 4..10):
#   - 1step: one optimiser step from the initialisation (the untrained encoder), vnc and cdeep3m-mito;
#   - 6min-plain: the 6-minute budget of benchmarks/his4mae_train.sh (585 steps) with the plain pixel
#     loss instead of the cpu preset's per-patch normalised one (vnc);
#   - plain: the cpu preset's full 3,534-step schedule of runs/maester-vnc-cpu.pt, with the plain loss;
# (benchmarks/maester.sh scores the trained models the same way), then a linear probe and k-means on the same pixels (benchmarks/linear_probe.py) for the filter bank
# and the MAESTER and HiS4MAE models. Needs runs/maester-{vnc,cdeep3m-mito}-cpu.pt
# (benchmarks/maester.sh) and runs/{maester,his4mae}-vnc-cpu-6min.pt (benchmarks/his4mae_train.sh vnc 6).
# Usage: benchmarks/maester_controls.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-output}
vnc=(../shared/data/vnc/stack2/raw --voxel-size 50 4.6 4.6)
cdeep3m=(../shared/data/cdeep3m-mito/testset --voxel-size 40 5.9 5.9)
train() {  # train NAME ARGS...: train runs/NAME.pt unless it exists
    local name=$1; shift
    [ -f "runs/$name.pt" ] || orgaseg train "$@" --method maester --preset cpu -o "runs/$name.pt" --quiet
}
train maester-vnc-cpu-1step "${vnc[@]}" --steps 1
train maester-cdeep3m-mito-cpu-1step "${cdeep3m[@]}" --steps 1
train maester-vnc-cpu-6min-plain "${vnc[@]}" --steps 585 --model-option norm_pix_loss=false
train maester-vnc-cpu-plain "${vnc[@]}" --steps 3534 --snapshots 5 --model-option norm_pix_loss=false
score() {  # score DATASET CHECKPOINT-NAME
    orgaseg benchmark --dataset "$1" --method maester --model "runs/maester-$1-cpu$2.pt" \
        --features expand-stride --stride 40 --sample-size 200000 -k 4-10 \
        -o "$out/$1-maester-cpu$2-es40" --overwrite --quiet
}
score vnc -1step
score vnc -6min-plain
score vnc -plain
score cdeep3m-mito -1step
es40=features=expand-stride,stride=40
python benchmarks/linear_probe.py --dataset vnc --slices 0 1 --method baseline \
    --method maester --model runs/maester-vnc-cpu.pt --options features=stride-only \
    --method maester --model runs/maester-vnc-cpu.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-1step.pt --options features=stride-only \
    --method maester --model runs/maester-vnc-cpu-1step.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-6min.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-6min-plain.pt --options $es40 \
    --method maester --model runs/maester-vnc-cpu-plain.pt --options $es40 \
    --method his4mae --model runs/his4mae-vnc-cpu-6min.pt --options $es40 \
    | tee "$out/linear-probe-vnc.txt"
