#!/usr/bin/env bash
# Train maester, his4mae and sdae-recon (cpu preset) with the same wall-clock budget on one dataset,
# keeping 5 snapshots along each schedule. Usage: benchmarks/his4mae_train.sh DATASET MINUTES
#
# The budget is turned into steps with training rates measured on the idle 2-core AMD EPYC machine
# (cpu preset, batch 64): maester 104 fields of view/s, his4mae and sdae-recon 64 (the EMA teacher
# encodes every field of view unmasked: about 1.6x the FLOPs of a MAESTER step). Fixing steps
# rather than passing --minutes keeps the comparison fair when the machine is shared: MINUTES only names
# the budget (and the checkpoints); every model trains by --steps. The committed results used MINUTES 6 on
# vnc (maester 585 steps, his4mae and sdae-recon 360) and 3 on cdeep3m-mito (292 and 180), as recorded in
# the "training" entries of benchmarks/results/*-cpu-{6,3}min-es40/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?dataset: vnc or cdeep3m-mito}
minutes=${2:?training minutes per model}
case "$dataset" in
    vnc) train=../shared/data/vnc/stack2/raw; voxel="50 4.6 4.6" ;;
    cdeep3m-mito) train=../shared/data/cdeep3m-mito/testset; voxel="40 5.9 5.9" ;;
    *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
for method in maester his4mae sdae-recon; do
    case "$method" in maester) rate=104 ;; *) rate=64 ;; esac
    steps=$(python -c "print(round($minutes * 60 * $rate / 64))")
    ckpt=runs/$method-$dataset-cpu-${minutes}min.pt
    if [ ! -f "$ckpt" ]; then
        orgaseg train "$train" --method "$method" --preset cpu --steps "$steps" --snapshots 5 \
            --voxel-size $voxel -o "$ckpt" --quiet
    elif python -c "import sys, torch; r = torch.load('$ckpt', weights_only=True); sys.exit(r['step'] >= r['total_steps'])"; then
        # an interrupted run continues exactly where it stopped
        orgaseg train "$train" --method "$method" --resume --snapshots 5 --voxel-size $voxel -o "$ckpt" --quiet
    fi
done
