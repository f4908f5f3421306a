"""Declares the compiled extensions and their flags; metadata lives in pyproject.toml."""
import os
import subprocess
import sys
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup


def openmp_flags():
    """The compile/link flags for OpenMP, or [] with a loud warning if the compiler lacks it."""
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
        WARNING: the C compiler does not support OpenMP (-fopenmp failed).
        fastnn is built WITHOUT OpenMP: elementwise kernels run on one thread.
        BLAS products are still multithreaded.
        ***********************************************************************
        """))
    return []


OMP = openmp_flags()
# No errno or floating-point traps are used: these let the compiler vectorize loops with
# sqrt and branch-free selects. (No -ffast-math: NaN/inf and rounding stay IEEE.)
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"] + OMP
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
