"""One worker's directory for on-disk table state, held for the life of the process.

RocksDB lets one process open a database, and several workers may run on one machine (tests,
`docker compose --scale stream=N`), so each worker takes the first free slot under
`<SALESFLOW_STATE_DIR>/<app id>/`. A restarted worker usually gets its old slot back and only
recovers the changelog records written since; the slot's lock is an `flock`, which the kernel
releases when the process dies, even by `kill -9`.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import uuid
from pathlib import Path
from typing import IO

from salesflow.errors import ConfigError

log = logging.getLogger("salesflow.stream")
_held: list[IO[str]] = []  # open lock files: closing one would free its slot


def claim(root: Path, slots: int = 64) -> Path:
    """Lock and return the first free slot directory under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        lock = (root / f"slot-{slot}.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held.append(lock)
        path = root / f"slot-{slot}"
        path.mkdir(exist_ok=True)
        return path
    raise ConfigError(f"all {slots} state slots under {root} are held by running workers")


def bind(slot: Path, changelog_id: str) -> None:
    """Empty the slot if its state was built from another incarnation of the changelog.

    A namespace's topics deleted and created again (a wiped broker, a reset) would otherwise
    meet local state that still remembers the old sale ids, and take new sales for replays.
    """
    marker = slot / "changelog-id"
    known = marker.read_text().strip() if marker.exists() else None
    if known != changelog_id:
        stale = [p for p in slot.iterdir() if p.name not in (marker.name, "process-id")]
        if stale:
            log.warning("state in %s belongs to another changelog; starting it afresh", slot)
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        marker.write_text(changelog_id + "\n")


def process_id(slot: Path) -> str:
    """A stable id of the worker that uses `slot` (created on first use).

    The worker's `transactional.id` derives from it: a worker restarted in the same slot
    fences its predecessor's open transaction at once, and two machines never share one.
    """
    path = slot / "process-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex[:16]
        path.write_text(value + "\n")
        return value
