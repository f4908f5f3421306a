#!/usr/bin/env bash
# Run a short training under valgrind memcheck and report errors whose stack passes
# through fastnn's extensions (the interpreter's own are ignored).
#   bash tools/valgrind.sh
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
PYTHONMALLOC=malloc OMP_NUM_THREADS=1 valgrind --tool=memcheck --error-limit=no \
    --num-callers=30 --log-file="$log" \
    "$(python3 -c "import sys; print(sys.executable)")" tools/valgrind_train.py
invalid=$(grep -E "Invalid (read|write)|uninitialised|Uninitialised" -A 30 "$log" \
          | grep -c -E "_engine|_kernels" || true)
echo "valgrind log: $log"
echo "errors through fastnn's extensions: $invalid"
[ "$invalid" -eq 0 ]
