"""Declares the compiled extensions and their flags; metadata lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup


# No errno or floating-point traps are used: these let the compiler vectorize loops with
# sqrt and branch-free selects. (No -ffast-math: NaN/inf and rounding stay IEEE.)
# -ffp-contract=off: no fused multiply-adds, so the instruction-set clones of a loop
# (csrc/adam.h) round exactly as the baseline build does.
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
MODULES = ["_engine", "_kernels"]

extensions = [
    Extension(f"fastnn.{name}", [f"csrc/{name}.pyx"], include_dirs=["csrc"],
              extra_compile_args=COMPILE_ARGS)
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
