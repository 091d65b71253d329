"""Process bookkeeping shared by the services of `salesflow stack`.

A service is "ours" only when its pid file names a live process whose command line still
contains a path from our stack dir: a recycled pid, or a broker someone started by hand on the
same port, is never taken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from salesflow.errors import StackError

STOP_TIMEOUT_SECONDS = 20.0

# Popen objects of the services this process started: kept so they are reaped (no zombie, no
# "still running" warning) when `down` runs in the same process, e.g. in the tests.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ServiceStatus:
    """What `stack status` reports about one service."""

    name: str
    running: bool
    pid: int | None
    address: str
    since: datetime | None
    log_file: Path
    data_dir: Path


@contextlib.contextmanager
def stack_lock(stack_dir: Path) -> Iterator[None]:
    """Serialise `up`/`down` on one stack dir, so two callers never start two brokers."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    with (stack_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cmdline(pid: int) -> str | None:
    """The command line of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            _reap(pid)
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, IndexError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, if it is one."""
    child = _children.pop(pid, None)
    if child is not None:
        child.poll()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and is ours; a stale file is removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return None
    cmdline = _cmdline(pid)
    if cmdline is None or marker not in cmdline:
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def pid_since(pid_file: Path) -> datetime | None:
    """When the service was started: the pid file is written right after the spawn."""
    try:
        return datetime.fromtimestamp(pid_file.stat().st_mtime, tz=UTC)
    except OSError:
        return None


def spawn(argv: Sequence[str], log_file: Path, pid_file: Path) -> subprocess.Popen[bytes]:
    """Start a detached service (own session, so it outlives the CLI) and write its pid file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:  # this start only; the services keep their own logs
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def stop(pid_file: Path, marker: str, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
    """SIGTERM the service's process group, SIGKILL it after `timeout`; returns the pid stopped."""
    pid = read_pid(pid_file, marker)
    if pid is None:
        return None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _cmdline(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if _cmdline(pid) is not None:
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    # Anything the service forked into its group goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    if _cmdline(pid) is not None:
        raise StackError(f"process {pid} ({pid_file.stem}) did not stop, even after SIGKILL")
    pid_file.unlink(missing_ok=True)
    return pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the whole group when the service leads it (it does: start_new_session)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_logged(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> bool:
    """Run a setup step to completion with its output appended to `log`; True if it succeeded."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    return done.returncode == 0


def apt_install(package: str, log: Path) -> bool:
    """apt-get install `package` when we are root (a clean CI machine); `apt-get update` only
    if that fails. False when it cannot or did not succeed."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    # RUNLEVEL=1 keeps invoke-rc.d from starting a service the package ships (MariaDB's).
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    return run_logged(install, log, env) or (
        run_logged(["apt-get", "update", "-q"], log, env) and run_logged(install, log, env))


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log for an error message, without Java stack frames."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    kept = [line for line in text.rstrip().splitlines() if not line.lstrip().startswith("at ")]
    return "\n".join(kept[-lines:]) or "(log is empty)"
