"""Declares the compiled extensions and their flags; metadata lives in pyproject.toml."""
import os
import subprocess
import sys
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup


def openmp_flags():
    """-fopenmp when the environment asks for it (FASTNN_OPENMP=1) and the compiler has it.

    Off by default. The training loop runs no OpenMP region (csrc/_engine.pyx, point 3:
    measured 7-35x slower epochs with one), and the standalone passes that could use it
    are memory-bound (the input's finite check: 6.9 ms on 1 thread, 6.3 ms on 2 for
    60000 x 784). Without it, fastnn brings no OpenMP runtime of its own into a process
    that may already hold scikit-learn's or torch's: BLAS's threads are its only threads.
    """
    if os.environ.get("FASTNN_OPENMP", "0") != "1":
        return []
    flag = "-fopenmp"
    code = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        result = subprocess.run([cc, flag, src, "-o", os.path.join(tmp, "probe")],
                                capture_output=True)
    if result.returncode == 0:
        return [flag]
    sys.stderr.write(textwrap.dedent("""
        ***********************************************************************
        WARNING: FASTNN_OPENMP=1 but the C compiler does not support OpenMP
        (-fopenmp failed). fastnn is built without it (the default).
        ***********************************************************************
        """))
    return []


OMP = openmp_flags()
# No errno or floating-point traps are used: these let the compiler vectorize loops with
# sqrt and branch-free selects. (No -ffast-math: NaN/inf and rounding stay IEEE.)
# -ffp-contract=off: no fused multiply-adds, so the instruction-set clones of a loop
# (csrc/adam.h) round exactly as the baseline build does.
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"] + OMP
MODULES = ["_engine", "_kernels"]

extensions = [
    Extension(f"fastnn.{name}", [f"csrc/{name}.pyx"], include_dirs=["csrc"],
              extra_compile_args=COMPILE_ARGS, extra_link_args=OMP)
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
