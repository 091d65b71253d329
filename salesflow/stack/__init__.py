"""`salesflow stack`: real local services without Docker, for development, demos and tests.

    up(settings, mysql=False, wipe_first=False, secure=False, role="admin") -> UpResult
                                                             start what is not running, wait
    down(settings, wipe=False) -> dict[str, int | None]      stop what `up` started (pid files)
    status(settings) -> list[ServiceStatus]                  (also named `stack_status`)

Kafka is a single KRaft node from the official jars on `kafka_bootstrap` (controller on port + 1);
MariaDB, with `mysql=True`, is a private server on 127.0.0.1:`mysql_port`. Both keep every file
under `settings.stack_dir`, so a second stack (other dir, other ports) can run beside the first.
Both listen on loopback only, root has no password: local use only.

`secure=True` is the same pair locked down like a production cluster (`secure.py`): Kafka
with SASL_SSL (SCRAM-SHA-512) and TLS-with-client-certificate listeners only, ACLs enforced,
one SCRAM user per role; MariaDB with TLS required. Certificates come from a CA the stack
makes with openssl; the exports are those of one role (`role`, `auth`). Call it with
`secure.secure_settings(settings)` to run beside a plain stack on the default ports.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from salesflow.errors import StackError
from salesflow.settings import Settings
from salesflow.stack import kafka, mariadb
from salesflow.stack import secure as secure_stack
from salesflow.stack._proc import ServiceStatus, stack_lock

__all__ = ["ServiceStatus", "UpResult", "down", "exports", "secure_settings", "stack_status",
           "status", "up"]

secure_settings = secure_stack.secure_settings


@dataclass(frozen=True)
class UpResult:
    services: list[ServiceStatus]
    started: list[str]  # names of the services this call started (empty: all were up already)
    exports: dict[str, str]  # environment variables that point salesflow at these services
    unset: list[str] = field(default_factory=list)  # and those that must not be set


def exports(settings: Settings, mysql: bool = False) -> dict[str, str]:
    """The settings to export so that the other commands use this (plain) stack."""
    return kafka.exports(settings) | (mariadb.exports(settings) if mysql else {})


def up(settings: Settings, mysql: bool = False, wipe_first: bool = False, secure: bool = False,
       role: str = "admin", auth: secure_stack.Auth | None = None) -> UpResult:
    """Start Kafka (and MariaDB) unless already running, and wait until they answer."""
    with stack_lock(settings.stack_dir.expanduser().resolve()):
        if wipe_first:
            _down(settings, wipe=True)
        if not secure and secure_stack.is_secure(settings):
            raise StackError(f"{settings.stack_dir} holds a secured stack: use `salesflow "
                             "stack up --secure` (or another SALESFLOW_STACK_DIR)")
        started = []
        if kafka.up(settings, secure):
            started.append("kafka")
        if mysql and mariadb.up(settings, secure):
            started.append("mariadb")
    if secure:
        lines = secure_stack.exports(settings, role, auth, mysql)
        return UpResult(status(settings), started, lines.values, lines.unset)
    return UpResult(status(settings), started, exports(settings, mysql))


def down(settings: Settings, wipe: bool = False) -> dict[str, int | None]:
    """Stop what `up` started; returns the pid stopped per service (None: was not running)."""
    with stack_lock(settings.stack_dir.expanduser().resolve()):
        return _down(settings, wipe)


def _down(settings: Settings, wipe: bool) -> dict[str, int | None]:
    stopped = {"kafka": kafka.down(settings, wipe), "mariadb": mariadb.down(settings, wipe)}
    if wipe:  # a secured stack's certificates and credentials go with its data
        shutil.rmtree(secure_stack.pki(settings).root, ignore_errors=True)
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    """Running or not, pid, address, since when and log file of each service."""
    return [kafka.status(settings), mariadb.status(settings)]


stack_status = status
