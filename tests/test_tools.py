"""The memory checkers of issue 6, run as part of the suite (so in CI): the whole suite
under AddressSanitizer + UndefinedBehaviorSanitizer (tools/sanitize.sh) and a training
run under valgrind memcheck (tools/valgrind.sh). Each is skipped, saying why, where its
tool is missing, and inside the sanitized run itself."""
import os
import shutil
import subprocess
import sys
import warnings

import pytest
from conftest import ROOT

import fastnn as fnn

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("FASTNN_UNDER_SANITIZERS") == "1",
                                 reason="already inside the sanitized run")]


def _sanitizer_runtime():
    """The path of libasan.so if gcc can link it, else None."""
    if shutil.which("gcc") is None:
        return None
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def junit_counts(path):
    """(tests, failures + errors, skipped) from pytest's JUnit XML report."""
    import xml.etree.ElementTree as ET
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return (int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors")),
            int(suite.get("skipped")))


def junit_failures(path):
    """{test id: the head of its failure or error message} from a JUnit XML report."""
    import xml.etree.ElementTree as ET
    failures = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            # classname is the module's dotted path, then any classes
            parts = case.get("classname").split(".")
            cut = next((i for i in range(len(parts), 0, -1)
                        if os.path.exists(os.path.join(ROOT, *parts[:i]) + ".py")), 1)
            node = "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], case.get("name")])
            failures[node] = ((bad.get("message") or "") + "\n" + (bad.text or ""))[-3000:]
    return failures


def run_sanitized(args, report):
    """tools/sanitize.sh with these pytest args; (exit status, stdout, stderr)."""
    result = subprocess.run(["bash", os.path.join(ROOT, "tools", "sanitize.sh"), "-m",
                             "not slow", "-W", "ignore", f"--junitxml={report}", *args],
                            capture_output=True, text=True, timeout=1200,
                            env=dict(os.environ, PYTHON=sys.executable))
    return result.returncode, result.stdout, result.stderr


def test_suite_under_address_and_undefined_behavior_sanitizers(tmp_path):
    """The suite (less its slow checks, left to the normal run) rebuilt and run under
    AddressSanitizer + UndefinedBehaviorSanitizer. This run judges memory safety: a
    sanitizer's report, a crash or a test that fails twice fails it. The normal run
    judges the assertions, so a test that fails here once and passes when run again
    (a timing-dependent test on a machine slowed by the sanitizers) is reported as a
    warning, with its first failure."""
    if _sanitizer_runtime() is None:
        pytest.skip("gcc with libasan is not installed")
    report = tmp_path / "sanitized.xml"
    status, out, err = run_sanitized([], report)
    assert "ERROR: AddressSanitizer" not in out + err and "runtime error" not in out + err, \
        err[-4000:]
    assert status in (0, 1) and os.path.exists(report), \
        f"exit status {status}\n--- pytest:\n{out[-3000:]}\n--- stderr:\n{err[-4000:]}"
    tests, failed, skipped = junit_counts(report)
    assert tests - skipped > 300, (tests, failed, skipped)
    failures = junit_failures(report)
    assert (status == 0) == (not failures), out[-3000:]
    if failures:
        again = tmp_path / "again.xml"
        status, out, err = run_sanitized(sorted(failures), again)
        assert "ERROR: AddressSanitizer" not in out + err and "runtime error" not in out + err, \
            err[-4000:]
        assert status == 0 and junit_counts(again)[0] == len(failures), "\n\n".join(
            f"{node}\n{text}" for node, text in failures.items()) + "\n--- again:\n" + out[-3000:]
        warnings.warn("failed under the sanitizers once, passed when run again: "
                      + "\n\n".join(f"{node}\n{text}" for node, text in failures.items()),
                      stacklevel=1)


def test_training_under_valgrind_memcheck():
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fnn.__file__)),
               PYTHON=sys.executable)
    result = subprocess.run(["bash", os.path.join(ROOT, "tools", "valgrind.sh")],
                            capture_output=True, text=True, timeout=900, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "errors through fastnn's extensions: 0" in output


def test_manylinux_wheel_builds_installs_and_runs(tmp_path):
    """tools/build_wheel.sh: sdist, the wheel built from it, auditwheel's manylinux tag,
    LICENSE inside and no debug sections, installed where no compiler is on the PATH,
    and its smoke test run from outside the checkout."""
    for tool in ("gcc", "readelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    result = subprocess.run(["bash", os.path.join(ROOT, "tools", "build_wheel.sh"),
                             str(tmp_path)], capture_output=True, text=True, timeout=1500,
                            env=dict(os.environ, PYTHON=sys.executable))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    wheel = result.stdout.strip().splitlines()[-1].removeprefix("wheel: ")
    assert os.path.exists(wheel) and "manylinux_2_17_" in os.path.basename(wheel), wheel
    assert "ok: predict writes the original labels" in result.stdout


@pytest.mark.parametrize("args", [[], ["out"], ["out", "small", "extra"]])
def test_multicore_bench_says_how_to_call_it(tmp_path, args):
    """tools/multicore_bench.sh runs on a lent machine whose minutes are counted: a wrong
    call stops at once with its usage, before building anything."""
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "multicore_bench.sh"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert "usage:" in done.stderr and "small|large|mpi|busy" in done.stderr
    assert not (tmp_path / "out").exists()
