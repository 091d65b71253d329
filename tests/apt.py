"""Debian packages that tests need (promtool, prometheus, a compose client), installed with
apt-get when missing, the way `salesflow stack` installs MariaDB: as root, or through
password-less sudo. When a package cannot be had the test FAILS: a run without it must not
pass on skipped checks."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_ENV = {"DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}  # RUNLEVEL: start no service


def _apt(*args: str) -> subprocess.CompletedProcess:
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            return subprocess.CompletedProcess(args, 1, "", "not root and no sudo")
        prefix = [sudo, "-n"]
    return subprocess.run([*prefix, "apt-get", *args], capture_output=True, text=True,
                          timeout=900, env=os.environ | _ENV, stdin=subprocess.DEVNULL)


def ensure_binary(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` if it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.fail(f"{binary} is not installed and there is no apt-get to install {package}")
    install = ("install", "-y", "--no-install-recommends", package)
    attempts = [_apt(*install)]
    if attempts[-1].returncode != 0:  # a stale or empty package list: refresh, try again
        attempts += [_apt("update"), _apt(*install)]
    found = shutil.which(binary)
    if not found:
        tail = "\n".join((r.stderr or r.stdout or "")[-800:] for r in attempts)
        pytest.fail(f"{binary} is missing and `apt-get install {package}` failed:\n{tail}")
    return found
