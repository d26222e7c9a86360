#!/usr/bin/env bash
# Scaling (1x-32x tiled vnc volumes, scaling.py's default sizes: wall time, peak memory) and workers (serial vs dask 1 and 2 workers,
# identical outputs asserted). Writes benchmarks/results/scaling-vnc/ and benchmarks/results/workers-vnc/.
# Usage: bash benchmarks/scaling.sh [WORK_DIR]   (the tiled volumes and outputs take about 40 MB there)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/orgaseg-scaling}
python benchmarks/scaling.py --work "$work" -o benchmarks/results/scaling-vnc --repeats 2
python benchmarks/workers.py --work "$work" -o benchmarks/results/workers-vnc
