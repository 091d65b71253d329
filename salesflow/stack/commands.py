"""`salesflow stack up | down | status`: parse, call `salesflow.stack`, print.

Progress goes to stderr and only the `export ...` (and `unset ...`) lines to stdout, so
`eval "$(salesflow stack up --mysql)"` points the current shell at the stack.
Errors are `StackError`s, which the main CLI prints as one line with exit code 1.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from salesflow import stack
from salesflow.settings import Settings, get_settings

stack_app = typer.Typer(
    help="Local Kafka (and MariaDB) without Docker, for development and tests.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
_out = Console(soft_wrap=True)


class Role(StrEnum):
    admin = "admin"
    producer = "producer"
    stream = "stream"
    marts = "marts"


class Auth(StrEnum):
    scram = "scram"
    mtls = "mtls"


_SECURE_HELP = ("The secured stack: SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners, ACLs, "
                "MariaDB with TLS required; by default in .stack-secure on ports 9192-9194 "
                "(MariaDB 3316), beside the plain stack.")


def _settings(secure: bool) -> Settings:
    settings = get_settings()
    return stack.secure_settings(settings) if secure else settings


@stack_app.command()
def up(
    mysql: bool = typer.Option(False, "--mysql", help="Also start a local MariaDB for the marts."),
    wipe_first: bool = typer.Option(
        False, "--wipe-first", help="Stop the stack and delete its data before starting."
    ),
    secure: bool = typer.Option(False, "--secure", help=_SECURE_HELP),
    role: Annotated[Role, typer.Option(help="With --secure: print the exports of this role "
                                       "(admin: the operator, a super user; see `salesflow "
                                       "acl`).")] = Role.admin,
    auth: Annotated[Auth | None, typer.Option(help="With --secure: how the role connects "
                                              "(default: scram for producer and stream, mtls "
                                              "for marts and admin).")] = None,
) -> None:
    """Start the local services that are not running yet and wait until they answer."""
    settings = _settings(secure)
    with _err.status("starting the local stack (the first run fetches the Kafka jars)..."):
        result = stack.up(settings, mysql=mysql, wipe_first=wipe_first, secure=secure,
                          role=role.value, auth=auth.value if auth else None)
    for service in result.services:
        if service.running:
            verb = "started" if service.name in result.started else "already running"
            _err.print(f"[green]{service.name}[/] {verb} on {service.address} (pid {service.pid})")
            _err.print(f"  log {service.log_file}", markup=False, highlight=False)
    if secure:
        _err.print(f"exports of role {role.value}; secrets are files in SALESFLOW_SECRETS_DIR, "
                   "never printed", markup=False, highlight=False)
    for name in result.unset:
        _out.print(f"unset {name}", markup=False, highlight=False)
    for name, value in result.exports.items():
        _out.print(f"export {name}={value}", markup=False, highlight=False)


@stack_app.command()
def down(
    wipe: bool = typer.Option(False, "--wipe", help="Also delete the services' data (and a "
                              "secured stack's certificates and credentials)."),
    secure: bool = typer.Option(False, "--secure", help="The secured stack (see `up --secure`)."),
) -> None:
    """Stop the services that `stack up` started (by their pid files)."""
    for name, pid in stack.down(_settings(secure), wipe=wipe).items():
        _err.print(f"{name} stopped (pid {pid})" if pid else f"{name} was not running")
    if wipe:
        _err.print("data deleted")


@stack_app.command()
def status(
    secure: bool = typer.Option(False, "--secure", help="The secured stack (see `up --secure`)."),
) -> None:
    """Show, per service: running or not, pid, address, since when, log file."""
    for s in stack.status(_settings(secure)):
        state = f"[green]running[/], pid {s.pid}" if s.running else "[dim]not running[/]"
        since = f", since {s.since.astimezone():%Y-%m-%d %H:%M:%S}" if s.since else ""
        _out.print(f"[bold]{s.name}[/]: {state}, {s.address}{since}")
        _out.print(f"  log {s.log_file}", markup=False, highlight=False)
        _out.print(f"  data {s.data_dir}", markup=False, highlight=False)
