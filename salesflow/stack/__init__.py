"""`salesflow stack`: real local services without Docker, for development, demos and tests.

    up(settings, mysql=False, wipe_first=False) -> UpResult   start what is not running, wait
    down(settings, wipe=False) -> dict[str, int | None]      stop what `up` started (pid files)
    status(settings) -> list[ServiceStatus]                  (also named `stack_status`)

Kafka is a single KRaft node from the official jars on `kafka_bootstrap` (controller on port + 1);
MariaDB, with `mysql=True`, is a private server on 127.0.0.1:`mysql_port`. Both keep every file
under `settings.stack_dir`, so a second stack (other dir, other ports) can run beside the first.
Both listen on loopback only, root has no password: local use only.
"""

from __future__ import annotations

from dataclasses import dataclass

from salesflow.settings import Settings
from salesflow.stack import kafka, mariadb
from salesflow.stack._proc import ServiceStatus, stack_lock

__all__ = ["ServiceStatus", "UpResult", "down", "exports", "stack_status", "status", "up"]


@dataclass(frozen=True)
class UpResult:
    services: list[ServiceStatus]
    started: list[str]  # names of the services this call started (empty: all were up already)
    exports: dict[str, str]  # environment variables that point salesflow at these services


def exports(settings: Settings, mysql: bool = False) -> dict[str, str]:
    """The settings to export so that the other commands use this stack."""
    return kafka.exports(settings) | (mariadb.exports(settings) if mysql else {})


def up(settings: Settings, mysql: bool = False, wipe_first: bool = False) -> UpResult:
    """Start Kafka (and MariaDB) unless already running, and wait until they answer."""
    with stack_lock(settings.stack_dir.expanduser().resolve()):
        if wipe_first:
            _down(settings, wipe=True)
        started = []
        if kafka.up(settings):
            started.append("kafka")
        if mysql and mariadb.up(settings):
            started.append("mariadb")
    return UpResult(status(settings), started, exports(settings, mysql))


def down(settings: Settings, wipe: bool = False) -> dict[str, int | None]:
    """Stop what `up` started; returns the pid stopped per service (None: was not running)."""
    with stack_lock(settings.stack_dir.expanduser().resolve()):
        return _down(settings, wipe)


def _down(settings: Settings, wipe: bool) -> dict[str, int | None]:
    return {"kafka": kafka.down(settings, wipe), "mariadb": mariadb.down(settings, wipe)}


def status(settings: Settings) -> list[ServiceStatus]:
    """Running or not, pid, address, since when and log file of each service."""
    return [kafka.status(settings), mariadb.status(settings)]


stack_status = status
