#!/usr/bin/env bash
# The gpu section of benchmarks/reproduce.py on a lent GPU machine, one dataset per call.
#
# The device machine has PyTorch but not zarr or numcodecs, cannot reach any package index, and
# receives only the working tree (at most 64 MiB): the dataset and the wheels travel in .gpu-kit/,
# which git ignores (.git/info/exclude) and the device call names in `carry`.
#
#   here:        bash benchmarks/gpu_kit.sh prepare vnc          # or cdeep3m-mito
#   the device:  run(command="bash benchmarks/gpu_kit.sh run vnc", carry=[".gpu-kit"], timeout_s=590)
#   here again:  bash benchmarks/gpu_kit.sh unpack FOLDER     # FOLDER: the call's files_at
#   a dry run of `run` on a CPU:  GPU_KIT_TINY=1 OUT=/tmp/out bash benchmarks/gpu_kit.sh run vnc
#
# On the device it trains and scores the `paper` presets of maester and his4mae (reproduce.py's gpu
# section, GPU_STEPS steps each), writes the results and the checkpoints' weights (without the
# optimiser state, in pieces of at most 15 MiB: the device returns at most 8 files of 16 MiB) into
# $OUT, and stops the runs at 540 s so that what finished comes back.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?prepare, run or unpack}
dataset=${2:-vnc}
kit=.gpu-kit

case "$action" in
prepare)
    grep -qx "/$kit/" .git/info/exclude 2>/dev/null || echo "/$kit/" >> .git/info/exclude
    rm -rf "$kit" && mkdir -p "$kit/whl" "$kit/data"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$kit/whl" zarr numcodecs donfig
    case "$dataset" in
    vnc) parts=(vnc/stack1/raw vnc/stack1/labels vnc/stack2/raw) ;;
    cdeep3m-mito) parts=(cdeep3m-mito/training cdeep3m-mito/validation cdeep3m-mito/testset) ;;
    *) echo "unknown dataset $dataset" >&2; exit 2 ;;
    esac
    for part in "${parts[@]}"; do mkdir -p "$kit/data/$part" && cp -r "../shared/data/$part/." "$kit/data/$part/"; done
    du -sh "$kit"
    ;;
run)
    if [ -z "${GPU_KIT_TINY:-}" ]; then  # the wheels are for the device's Python 3.12
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$kit"/whl/*.whl
    fi
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    status=0
    # GPU_KIT_TINY=1 checks this script's logic on a CPU (reproduce.py --tiny: a phantom, tiny presets)
    timeout 540 python3 benchmarks/reproduce.py --section gpu --only "$dataset-*" --data-root "$kit/data" \
        --results /tmp/results --docs /tmp/results/results.md ${GPU_KIT_TINY:+--tiny} 2>&1 | grep -v "it/s\]" | tee /tmp/log.txt || status=$?
    python3 - <<'PY'
import pathlib, torch
for path in pathlib.Path("/tmp/results").glob("*/model.pt"):
    record = torch.load(path, map_location="cpu", weights_only=True)
    record.pop("optimizer", None)  # resuming needs it, segmenting does not
    torch.save(record, path.with_name("weights.pt"))
    path.unlink()
PY
    tar -czf /tmp/kit.tgz -C /tmp results log.txt
    split -b 15m -d /tmp/kit.tgz "$OUT/gpu-$dataset.tgz.part-"
    ls -l "$OUT"
    exit "$status"
    ;;
unpack)
    from=${2:?give the folder where the files of the device call landed}
    cat "$from"/gpu-*.tgz.part-* | tar -xzf - -C /tmp
    cp -r /tmp/results/. benchmarks/results/
    python3 benchmarks/render_results.py --results benchmarks/results --output docs/results.md
    ;;
*) echo "unknown action $action: prepare, run or unpack" >&2; exit 2 ;;
esac
