"""fastnn against the GEMM floor and torch: the same as `fastnn bench` (see
fastnn/benchmark.py for what is measured and how)."""
import sys

from fastnn.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
