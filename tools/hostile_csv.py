"""Hostile CSV files against `fastnn train`: for each, the exit status, the seconds, the
child's peak resident memory and the message. Each file is made once in FOLDER (the
largest is 200 MB); the child process starts from a small parent, so its peak is its own.

    python tools/hostile_csv.py FOLDER [python]
"""
import os
import subprocess
import sys
import time

CHILD = ("import resource, sys\n"
         "from fastnn.cli import main\n"
         "code = main(sys.argv[1:])\n"
         "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
         "print(f'peak {peak} MB', file=sys.stderr)\n"
         "sys.exit(code)\n")


def make(folder):
    """{description: path}, writing each file that is not there yet."""
    def wide(f):
        f.write(",".join(f"c{i}" for i in range(100000)) + "\n")
        f.write(",".join("1" for _ in range(100000)) + "\n")

    def empty(f):
        f.write("a,b,c,d,y\n")
        for _ in range(200):
            f.write(",,,,\n" * 100000)

    def quote(f):
        f.write('a,b,y\n1,2,x\n3,4,y\n5,"6,y\n7,8,x\n' + "9,10,y\n" * 1000)

    def field(f):
        f.write("a,b,y\n1,2,x\n3,")
        for _ in range(200):
            f.write("9" * 2**20)
        f.write(",y\n")

    cases = {"100,000 columns (1.5 MB)": ("wide.csv", wide),
             "100 MB of empty cells": ("empty.csv", empty),
             "an unclosed quote at line 4": ("quote.csv", quote),
             "a 200 MB field at line 3": ("field.csv", field)}
    paths = {}
    for description, (name, writer) in cases.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            with open(path, "w") as f:
                writer(f)
        paths[description] = path
    return paths


def main():
    folder = sys.argv[1]
    python = sys.argv[2] if len(sys.argv) > 2 else sys.executable
    os.makedirs(folder, exist_ok=True)
    paths = make(folder)
    for description, path in paths.items():
        start = time.perf_counter()
        done = subprocess.run([python, "-c", CHILD, "train", path, "--epochs", "1",
                               "--verbose", "0"], capture_output=True, text=True,
                              timeout=600)
        seconds = time.perf_counter() - start
        lines = done.stderr.strip().splitlines()
        peak = next((line for line in lines if line.startswith("peak ")), "peak ?")
        message = next((line for line in lines if line.startswith("fastnn train")), "")
        print(f"{description}: exit {done.returncode}, {seconds:.2f} s, {peak}; "
              f"{message[:160]}")


if __name__ == "__main__":
    main()
