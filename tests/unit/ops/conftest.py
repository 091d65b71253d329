"""Shared by the ops/ tests: `promtool` (installed here when missing) and the exported metrics.

`promtool` comes with Debian's `prometheus` package. A machine without it gets it from apt
(as root, or through password-less sudo); when it still cannot be had, the tests FAIL: a
CI run without promtool must not pass on skipped rule checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.unit.ops.promql import INSTRUMENTATION, exported_series_names, metric_declarations

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def _apt(*args: str) -> subprocess.CompletedProcess:
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            return subprocess.CompletedProcess(args, 1, "", "not root and no sudo")
        prefix = [sudo, "-n"]
    return subprocess.run(
        [*prefix, "apt-get", *args], capture_output=True, text=True, timeout=900,
        env=os.environ | _APT_ENV, stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of `promtool`, installing Debian's `prometheus` package if it is missing."""
    found = shutil.which("promtool")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.fail("promtool is not installed and there is no apt-get to install it with "
                    "(install Prometheus' promtool)")
    attempts = []
    install = ("install", "-y", "--no-install-recommends", "prometheus")
    result = _apt(*install)
    attempts.append(result)
    if result.returncode != 0:  # a stale or empty package list: refresh it and try again
        attempts.append(_apt("update"))
        result = _apt(*install)
        attempts.append(result)
    found = shutil.which("promtool")
    if not found:
        tail = "\n".join((r.stderr or r.stdout or "")[-800:] for r in attempts)
        pytest.fail(f"promtool is missing and `apt-get install prometheus` failed:\n{tail}")
    return found


@pytest.fixture(scope="session")
def exported_metrics() -> set[str]:
    declared = metric_declarations()
    assert len(declared) >= 10, f"parsed too few metrics from {INSTRUMENTATION}: {declared}"
    return exported_series_names(declared)
