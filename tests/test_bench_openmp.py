"""bench/bench_openmp.py compares fastnn's team with an OpenMP design on "the same epoch":
its C epoch (bench/openmp_step.c) must train as fastnn's fit does, on one thread and in
OpenMP loops alike, or the README's figures compare different work."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, run_python


def openmp_toolchain(folder):
    """Whether cc (or gcc) builds a program with -fopenmp here: a machine without an
    OpenMP runtime skips this test; a fault in openmp_step.c itself still fails it."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return False
    source = os.path.join(folder, "probe.c")
    with open(source, "w") as f:
        f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
    return subprocess.run([compiler, "-fopenmp", source, "-o", source[:-2]],
                          capture_output=True).returncode == 0


def test_c_epoch_trains_as_fastnn_fit(tmp_path):
    """Two epochs of 200 rows (batch 32: a short last batch) from the same start, rows in
    order, SGD with momentum: the C epoch's weights equal fit's to float32 rounding, with
    its passes on one thread and in OpenMP loops on 2 threads; so do the epochs' losses."""
    if not openmp_toolchain(str(tmp_path)):
        pytest.skip("no C compiler with OpenMP to build bench/openmp_step.c")
    code = f"""if True:
        import json, sys
        import numpy as np
        sys.path.insert(0, {os.path.join(ROOT, "bench")!r})
        import bench_openmp as bench
        import fastnn as fnn
        widths, batch = [12, 20, 8, 5], 32   # 20: a partial block of 16
        rng = np.random.default_rng(1)
        X = rng.standard_normal((200, widths[0])).astype(np.float32)
        y = rng.integers(0, widths[-1], 200)
        library = bench.build_library({str(tmp_path)!r})
        found = {{}}
        for use_openmp in (False, True):
            net, arrays = bench.c_network(widths, batch)
            model = fnn.Sequential([fnn.Dense(12, 20), fnn.ReLU(), fnn.Dense(20, 8),
                                    fnn.ReLU(), fnn.Dense(8, 5)], seed=0)
            dense = [layer for layer in model.layers if isinstance(layer, fnn.Dense)]
            for layer, w, b in zip(dense, arrays["weight"], arrays["bias"]):
                layer.weight, layer.bias = w, b
            start = [w.copy() for w in arrays["weight"]]
            _, c_losses = bench.c_epochs(library, net, X, y, batch, 2, use_openmp)
            history = model.fit(
                X, y, loss="cross_entropy", epochs=2, batch_size=batch, shuffle=False,
                optimizer=fnn.optim.SGD(lr=bench.LR, momentum=bench.MOMENTUM))
            found[str(use_openmp)] = {{
                "moved": min(float(np.abs(w - s).max()) for w, s in
                             zip(arrays["weight"], start)),
                "difference": max(float(np.abs(w - layer.weight).max() /
                                        np.abs(layer.weight).max())
                                  for w, layer in zip(arrays["weight"], dense)),
                "bias_difference": max(float(np.abs(b - layer.bias).max())
                                       for b, layer in zip(arrays["bias"], dense)),
                "loss_difference": max(abs(a - b) for a, b in
                                       zip(c_losses, history["loss"]))}}
        print(json.dumps(found))
    """
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")
    result = run_python(["-c", code], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for use_openmp, seen in found.items():
        assert seen["moved"] > 1e-3, use_openmp          # training changed every layer
        assert seen["difference"] < 1e-5, (use_openmp, seen)
        assert seen["bias_difference"] < 1e-5, (use_openmp, seen)
        assert seen["loss_difference"] < 1e-5, (use_openmp, seen)   # the mean over the rows
    assert np.isfinite([v for seen in found.values() for v in seen.values()]).all()
