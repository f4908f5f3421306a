#!/usr/bin/env bash
# Build fastnn's extensions with AddressSanitizer and UndefinedBehaviorSanitizer in a
# temporary copy of this checkout (the checkout's own build is left alone) and run the
# test suite there under them. Python itself is not instrumented, so libasan is
# preloaded and leak detection (which would report the interpreter's own) is off.
#   bash tools/sanitize.sh [pytest args]        (tests/test_tools.py runs it in CI)
# Arguments naming tests (tests/...) run just those; otherwise the whole of tests/.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$src/setup.py" "$src/pyproject.toml" "$src/README.md" "$src/csrc" "$src/fastnn" \
    "$src/tests" "$src/examples" "$src/tools" "$src/bench" "$work/"
cd "$work"
rm -f fastnn/*.so csrc/*.c
export CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"
export LDFLAGS="-fsanitize=address,undefined"
PYTHON="${PYTHON:-python3}"   # the interpreter (and its Cython) to build and test with
# the build's warnings would bury a failure's report: shown only if the build fails
if ! "$PYTHON" setup.py build_ext --inplace -q > "$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    exit 1
fi
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work"
# the real-data tests read MNIST beside the original checkout
export FASTNN_MNIST="${FASTNN_MNIST:-$src/../shared/data/mnist}"
export FASTNN_UNDER_SANITIZERS=1
targets=(tests)
for arg in "$@"; do
    case "$arg" in tests/*) targets=() ;; esac
done
"$PYTHON" -m pytest -q -p no:cacheprovider "${targets[@]}" "$@"
