"""The secured local stack (`salesflow stack up --secure`): where it lives and how each role
of the pipeline connects to it.

    secure_settings(settings) -> Settings     its own stack dir and ports, unless set explicitly
    role_settings(settings, role, ...) -> Settings      what a process of that role runs with
    exports(settings, role, ...) -> Exports             the same, as shell `export`/`unset` lines

Roles (see `salesflow acl` for what each may do): `producer` and `stream` connect with SASL_SSL
and their SCRAM-SHA-512 user, `marts` and `admin` (the broker's super user, for operators)
with a client certificate over TLS; `auth` picks the other way for a role that has both.
Secrets are never printed: each profile gets its own `SALESFLOW_SECRETS_DIR` holding only the
secrets it needs, one file each, readable by their owner only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from salesflow.errors import ConfigError
from salesflow.settings import Settings
from salesflow.stack.pki import CLIENT_ROLES, SCRAM_ROLES, Pki

DEFAULT_STACK_DIR = Path(".stack-secure")
DEFAULT_KAFKA_PORT = 9192  # SASL_SSL; controller 9193, TLS with client certificates 9194
DEFAULT_MYSQL_PORT = 3316
MYSQL_USER = "salesflow"
MYSQL_DATABASE = "salesflow"

Auth = Literal["scram", "mtls"]
DEFAULT_AUTH: dict[str, Auth] = {"admin": "mtls", "producer": "scram", "stream": "scram",
                                 "marts": "mtls"}

# What a profile sets; anything else a process needs comes from its own settings.
_ACCESS_FIELDS = frozenset({
    "kafka_bootstrap", "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username",
    "kafka_sasl_password", "kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file",
    "kafka_ssl_key_password", "mart_db_url", "mart_db_password", "mart_db_ssl_ca_file",
})
_KAFKA_ACCESS_FIELDS = frozenset(f for f in _ACCESS_FIELDS if f.startswith("kafka_"))
_SECRETS = ("kafka_sasl_password", "kafka_ssl_key_password", "mart_db_password")


def pki(settings: Settings) -> Pki:
    return Pki(settings.stack_dir.expanduser().resolve() / "secure")


def is_secure(settings: Settings) -> bool:
    """Whether the stack dir holds a secured stack (its certificates exist)."""
    return pki(settings).ca_cert.is_file()


def secure_settings(settings: Settings) -> Settings:
    """`settings` for the secured stack: `.stack-secure`, Kafka on 9192-9194 and MariaDB on
    3316 unless the stack dir, bootstrap or MySQL port were set explicitly, so that it runs
    beside a plain stack on the defaults."""
    update: dict[str, Any] = {}
    if "stack_dir" not in settings.model_fields_set:
        update["stack_dir"] = DEFAULT_STACK_DIR
    if "kafka_bootstrap" not in settings.model_fields_set:
        update["kafka_bootstrap"] = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    if "mysql_port" not in settings.model_fields_set:
        update["mysql_port"] = DEFAULT_MYSQL_PORT
    return settings.model_copy(update=update)


def kafka_port_file(settings: Settings) -> Path:
    """The SASL_SSL port, recorded at the first start: the exports point
    `SALESFLOW_KAFKA_BOOTSTRAP` at a role's own listener, which must not move the stack."""
    return pki(settings).root / "kafka-port"


@dataclass(frozen=True)
class Exports:
    """Shell lines that point `salesflow` at the stack as one role."""

    values: dict[str, str]
    unset: list[str] = field(default_factory=list)


def _profile(settings: Settings, role: str, auth: Auth | None, mysql: bool
             ) -> tuple[dict[str, Any], Path]:
    """The access settings of a role (None: must be unset) and its secrets dir."""
    if role not in CLIENT_ROLES:
        raise ConfigError(f"unknown role {role!r}: one of {', '.join(CLIENT_ROLES)}")
    auth = auth or DEFAULT_AUTH[role]
    if auth == "scram" and role not in SCRAM_ROLES:
        raise ConfigError(f"role {role} has no SCRAM user: it connects with its certificate")
    from salesflow.stack.kafka import listen_address  # the port recorded at the first start

    p = pki(settings)
    host, port = listen_address(settings, secure=True)
    values: dict[str, Any] = {"kafka_ssl_ca_file": p.ca_cert, "kafka_sasl_username": None,
                              "kafka_ssl_cert_file": None, "kafka_ssl_key_file": None}
    secrets: dict[str, str] = {}
    if auth == "scram":
        values |= {"kafka_bootstrap": f"{host}:{port}", "kafka_security_protocol": "SASL_SSL",
                   "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": role}
        secrets["kafka_sasl_password"] = p.scram_password(role)
    else:
        values |= {"kafka_bootstrap": f"{host}:{port + 2}", "kafka_security_protocol": "SSL",
                   "kafka_ssl_cert_file": p.cert(role), "kafka_ssl_key_file": p.key(role)}
        secrets["kafka_ssl_key_password"] = p.key_password(role)
    if mysql:
        values["mart_db_url"] = (f"mysql+pymysql://{MYSQL_USER}@127.0.0.1:{settings.mysql_port}/"
                                 f"{MYSQL_DATABASE}")
        values["mart_db_ssl_ca_file"] = p.ca_cert
        secrets["mart_db_password"] = p.mysql_password()
    order = ("kafka_bootstrap", "kafka_security_protocol", "kafka_sasl_mechanism",
             "kafka_sasl_username", "kafka_ssl_ca_file", "kafka_ssl_cert_file",
             "kafka_ssl_key_file", "mart_db_url", "mart_db_ssl_ca_file")
    values = {name: values[name] for name in order if name in values}
    secrets_dir = p.root / "secrets" / f"{role}-{auth}{'-mysql' if mysql else ''}"
    _write_secrets(secrets_dir, secrets)
    return values, secrets_dir


def _write_secrets(directory: Path, secrets: dict[str, str]) -> None:
    """One file per secret, named as pydantic-settings looks for it (`salesflow_<field>`)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, value in secrets.items():
        path = directory / f"salesflow_{name}"
        if path.is_file() and path.read_text() == value:
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)


def role_settings(settings: Settings, role: str, auth: Auth | None = None,
                  mysql: bool = False) -> Settings:
    """`settings` with the access settings of `role` (everything else kept)."""
    values, secrets_dir = _profile(settings, role, auth, mysql)
    kept = settings.model_dump(exclude=_ACCESS_FIELDS if mysql else _KAFKA_ACCESS_FIELDS)
    return Settings(_env_file=None, _secrets_dir=str(secrets_dir),  # type: ignore[call-arg]
                    **(kept | values))


def exports(settings: Settings, role: str, auth: Auth | None = None,
            mysql: bool = False) -> Exports:
    """The environment that `role_settings` describes. Secrets are files in the secrets dir;
    their environment variables are unset, since they would take precedence."""
    values, secrets_dir = _profile(settings, role, auth, mysql)
    env = {f"SALESFLOW_{k.upper()}": str(v) for k, v in values.items() if v is not None}
    env["SALESFLOW_SECRETS_DIR"] = str(secrets_dir)
    unset = [f"SALESFLOW_{k.upper()}" for k, v in values.items() if v is None]
    unset += [f"SALESFLOW_{name.upper()}" for name in _SECRETS
              if mysql or name.startswith("kafka_")]
    return Exports(env, sorted(unset))
