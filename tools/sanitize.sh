#!/usr/bin/env bash
# Build fastnn's extensions in place with AddressSanitizer and UndefinedBehaviorSanitizer
# and run the test suite under them. Python itself is not instrumented, so libasan is
# preloaded and leak detection (which would report the interpreter's own) is off.
#   bash tools/sanitize.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"
export LDFLAGS="-fsanitize=address,undefined"
rm -rf build fastnn/*.so
python3 setup.py build_ext --inplace -q
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pytest -q -p no:cacheprovider tests "$@"
