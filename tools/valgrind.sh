#!/usr/bin/env bash
# Run a short training under valgrind memcheck and report errors whose stack passes
# through fastnn's extensions (the interpreter's own are ignored). Uses $PYTHON if set.
#   bash tools/valgrind.sh                      (tests/test_tools.py runs it in CI)
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
python="${PYTHON:-$(python3 -c "import sys; print(sys.executable)")}"
out=$(PYTHONMALLOC=malloc OMP_NUM_THREADS=1 valgrind --tool=memcheck --error-limit=no \
    --num-callers=30 --log-file="$log" "$python" tools/valgrind_train.py)
status=$?
echo "$out"
invalid=$(grep -E "Invalid (read|write)|uninitialised|Uninitialised" -A 30 "$log" \
          | grep -c -E "_engine|_kernels" || true)
loaded=$(grep -c -E "fastnn/_(engine|kernels)" "$log" || true)
echo "valgrind log: $log"
echo "errors through fastnn's extensions: $invalid"
[ "$status" -eq 0 ] && [ "$out" != "${out%done}" ] && [ "$invalid" -eq 0 ]
