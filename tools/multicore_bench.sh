#!/bin/bash
# The multicore tables of issues 10 and 13, on a machine with more cores (the device
# tool's lent machine), one phase per call so each fits the tool's 10 minutes:
#
#   bash tools/multicore_bench.sh OUT small    # fastnn bench, 784-256-128-10
#   bash tools/multicore_bench.sh OUT large    # fastnn bench, 784-1024-1024-10
#   bash tools/multicore_bench.sh OUT mpi      # bench/bench_distributed.py
#   bash tools/multicore_bench.sh OUT busy     # bench/bench_busy.py
#   bash tools/multicore_bench.sh OUT grid     # bench/bench_grid.py: the grid of tiles
#                                              # against blocks of units, 4 threads up
#
# Thread counts: 1, 2, 4, ... up to the cores available; SGD momentum and Adam; batch
# sizes $BATCHES (default 32,128,512: split `large` into BATCHES=32 and BATCHES=128,512
# where one call might pass 10 minutes); torch at the same counts when installed. The extensions are
# built in place with $PYTHON (default python3, which needs numpy, scipy, Cython and
# threadpoolctl: the lent machine's image has them). The data is synthetic unless
# $FASTNN_DATA names a folder with MNIST (the speed does not depend on the values).
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for these runs; the JSON names the
# BLAS kernel that ran. Render a table with `python tools/bench_table.py OUT/F.json`.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 OUT small|large|mpi|busy|grid" >&2
    exit 2
fi
out=$1
phase=$2
py=${PYTHON:-python3}
mkdir -p "$out"
cd "$(dirname "$0")/.."
"$py" setup.py -q build_ext --inplace > "$out/build-$phase.log" 2>&1 \
    || { tail -20 "$out/build-$phase.log"; exit 1; }
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
cores=$("$py" -c "import fastnn._threads as t; print(t.available_cores())")
counts=1
n=2
while [ "$n" -le "$cores" ]; do
    counts="$counts,$n"
    n=$((n * 2))
done
echo "machine: $(nproc) CPUs, $cores available; $(uname -m); thread counts $counts"
"$py" -m fastnn info
batches=${BATCHES:-32,128,512}
bench() {
    "$py" -m fastnn bench --threads "$counts" --networks "$1" --optimizers momentum,adam \
        --batch-sizes "$batches" --repeats "$2" --peers "" \
        --json "$out/bench-$phase-${batches//,/_}.json"
}
case $phase in
    small) bench 784-256-128-10 2 ;;
    large) bench 784-1024-1024-10 1 ;;
    mpi) "$py" bench/bench_distributed.py --cores "$cores" --json "$out/distributed.json" ;;
    busy) "$py" bench/bench_busy.py --rounds 3 --json "$out/busy.json" ;;
    grid) "$py" bench/bench_grid.py --threads "${counts#1,2,}" --batch-sizes "$batches" \
              --repeats 2 --json "$out/grid.json" ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
