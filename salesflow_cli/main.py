"""The `salesflow` console script: parse, build settings, call a function, and turn every error
into one line and a non-zero exit (a traceback only with `--debug`).

`--help` stays fast because a verb group's module (Kafka clients, SQLAlchemy, pandas...) is
imported only when that group is the one being run; the others are listed by name and help
text alone (`GROUPS`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

import typer

from salesflow.errors import SalesflowError

# verb -> (module, attribute holding its typer.Typer, help text shown by `salesflow --help`)
GROUPS: dict[str, tuple[str, str, str]] = {
    "stack": ("salesflow_cli.stack_verbs", "stack_app",
              "Local Kafka (and MariaDB) without Docker, and Kafka's own tools."),
    "produce": ("producers.commands", "produce_app", "Publish dimensions and sales to Kafka."),
    "marts": ("salesflow_cli.marts_verbs", "marts_app",
              "The customer and sales-team data marts: follow, flush, rebuild, export, show."),
    "dlq": ("salesflow_cli.dlq_verbs", "dlq_app", "The dead-letter topic: show, replay."),
    "acl": ("salesflow.acl", "acl_app", "Least-privilege ACLs of each role: show, apply."),
}
EXIT_USAGE = 2
EXIT_UNEXPECTED = 70
# Long-running services log their progress (INFO) by default; other verbs only warnings.
SERVICES = (("marts", "follow"), ("stream",))
_debug = False
_service = False


def package_version() -> str:
    try:
        return version("salesflow")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"salesflow {package_version()}")
        raise typer.Exit(0)


def build_app(load: set[str] | frozenset[str] = frozenset(GROUPS)) -> typer.Typer:
    """The command tree; the groups in `load` are imported, the others are placeholders."""
    app = typer.Typer(
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=True,
        help="salesflow: streaming sales analytics (Kafka → stream workers → data marts).",
    )
    app.callback()(_options)
    for name, (module, attribute, text) in GROUPS.items():
        group = (getattr(importlib.import_module(module), attribute) if name in load
                 else typer.Typer(no_args_is_help=True))
        app.add_typer(group, name=name, help=text)
    from salesflow_cli import verbs

    verbs.register(app)
    return app


def _options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
    _version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    global _debug
    _debug = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if _service and not debug:
        logging.getLogger("salesflow").setLevel(logging.INFO)
    # librdkafka retries connections on its own and says so loudly; for a command the one-line
    # error (or, with --debug, the whole story) is what a person needs; a service logs one
    # line when Kafka goes away and one when it is back (salesflow.librdkafka_log).
    logging.getLogger("salesflow.librdkafka").setLevel(
        logging.DEBUG if debug else logging.WARNING if _service else logging.CRITICAL)


def _wanted_groups(args: list[str]) -> set[str]:
    """The group named by the first word that is not an option (all of them when completing)."""
    if any(k.startswith("_SALESFLOW_COMPLETE") for k in os.environ):
        return set(GROUPS)
    verb = next((a for a in args if not a.startswith("-")), None)
    return {verb} if verb in GROUPS else set()


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error as one line: the problem, then where to read more."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"{exc.format_message()}{where}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    global _debug, _service
    args = list(sys.argv[1:] if argv is None else argv)
    _debug = "--debug" in args
    words = tuple(a for a in args if not a.startswith("-"))
    _service = any(words[:len(s)] == s for s in SERVICES)
    try:
        app = build_app(_wanted_groups(args))
        result = app(args=args, prog_name="salesflow", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("salesflow: aborted", err=True)
        return 130
    except typer.TyperException as exc:  # a usage error (typer's own click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `salesflow marts`: the help, as asked
            exc.show()  # type: ignore[attr-defined]
            return EXIT_USAGE
        typer.echo(f"salesflow: {_usage_line(exc)}", err=True)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except SalesflowError as exc:
        if _debug:
            raise
        typer.echo(f"salesflow: {exc}", err=True)
        return getattr(exc, "exit_code", 1)
    except Exception as exc:  # a bug, or an error not mapped yet: still one line
        if _debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"salesflow: unexpected {type(exc).__name__}: {first} "
                   "(run with --debug for the traceback)", err=True)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
