"""`salesflow stack up | down | status`: parse, call `salesflow.stack`, print.

Progress goes to stderr and only the `export ...` lines to stdout, so
`eval "$(salesflow stack up --mysql)"` points the current shell at the stack.
Errors are `StackError`s, which the main CLI prints as one line with exit code 1.
"""

from __future__ import annotations

import typer
from rich.console import Console

from salesflow import stack
from salesflow.settings import get_settings

stack_app = typer.Typer(
    help="Local Kafka (and MariaDB) without Docker, for development and tests.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
_out = Console(soft_wrap=True)


@stack_app.command()
def up(
    mysql: bool = typer.Option(False, "--mysql", help="Also start a local MariaDB for the marts."),
    wipe_first: bool = typer.Option(
        False, "--wipe-first", help="Stop the stack and delete its data before starting."
    ),
) -> None:
    """Start the local services that are not running yet and wait until they answer."""
    settings = get_settings()
    with _err.status("starting the local stack (the first run fetches the Kafka jars)..."):
        result = stack.up(settings, mysql=mysql, wipe_first=wipe_first)
    for service in result.services:
        if service.running:
            verb = "started" if service.name in result.started else "already running"
            _err.print(f"[green]{service.name}[/] {verb} on {service.address} (pid {service.pid})")
            _err.print(f"  log {service.log_file}", markup=False, highlight=False)
    for name, value in result.exports.items():
        _out.print(f"export {name}={value}", markup=False, highlight=False)


@stack_app.command()
def down(
    wipe: bool = typer.Option(False, "--wipe", help="Also delete the services' data."),
) -> None:
    """Stop the services that `stack up` started (by their pid files)."""
    for name, pid in stack.down(get_settings(), wipe=wipe).items():
        _err.print(f"{name} stopped (pid {pid})" if pid else f"{name} was not running")
    if wipe:
        _err.print("data deleted")


@stack_app.command()
def status() -> None:
    """Show, per service: running or not, pid, address, since when, log file."""
    for s in stack.status(get_settings()):
        state = f"[green]running[/], pid {s.pid}" if s.running else "[dim]not running[/]"
        since = f", since {s.since.astimezone():%Y-%m-%d %H:%M:%S}" if s.since else ""
        _out.print(f"[bold]{s.name}[/]: {state}, {s.address}{since}")
        _out.print(f"  log {s.log_file}", markup=False, highlight=False)
        _out.print(f"  data {s.data_dir}", markup=False, highlight=False)
