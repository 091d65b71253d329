"""The `salesflow` console script: parse, build settings, call a function, and turn the
project's errors into one line and a non-zero exit (a traceback only with `--debug`)."""

from __future__ import annotations

import logging
import sys

import click
import typer
from rich.console import Console

from mart_builder.commands import marts_app
from producers.commands import produce_app
from salesflow.acl import acl_app
from salesflow.errors import SalesflowError
from salesflow.settings import get_settings
from salesflow.stack.commands import stack_app
from stream_app.commands import stream_command

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="salesflow: streaming sales analytics (Kafka → stream workers → data marts).",
)
app.add_typer(stack_app, name="stack", help="Local Kafka (and MariaDB) without Docker.")
app.add_typer(acl_app, name="acl")
app.add_typer(produce_app, name="produce")
app.command("stream")(stream_command)

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter topic.")
app.add_typer(marts_app, name="marts")
app.add_typer(dlq_app, name="dlq")

_debug = False


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug",
                                        help="Show tracebacks of errors.")) -> None:
    global _debug
    _debug = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # librdkafka retries connections on its own and says so loudly; the one-line error
    # (or, with --debug, the whole story) is what a person needs.
    logging.getLogger("salesflow.librdkafka").setLevel(
        logging.DEBUG if debug else logging.CRITICAL)


@app.command()
def status(json_output: bool = typer.Option(False, "--json", help="Machine-readable.")) -> None:
    """Consumer lag, records in / accepted / replays / dead-lettered, last flush, mart rows."""
    from salesflow_cli.status import collect, render

    report = collect(get_settings())
    if json_output:
        typer.echo(report.to_json())
    else:
        render(report, Console())


@app.command()
def migrate(
    to: str = typer.Option(..., "--to", help="The new, empty namespace."),
    partitions: int = typer.Option(..., min=1, help="Partitions of its topics."),
) -> None:
    """Copy a namespace's dimensions and accepted sales into a new namespace (to change the
    partition count; stop producers and workers first)."""
    from stream_app.migrate import migrate as run

    settings = get_settings()
    typer.echo(run(settings, to, partitions).line(settings.namespace, to))


@app.command()
def demo(rows: int = typer.Option(20_000, min=100, help="Sales to generate.")) -> None:
    """The main job end to end on the embedded defaults, then a printed summary."""
    from salesflow_cli.demo import run_demo

    run_demo(get_settings(), rows, Console())


@dlq_app.command("show")
def dlq_show(
    reason: str | None = typer.Option(None, help="Only this reason code."),
    limit: int = typer.Option(50, min=0, help="Show the newest N (0: all)."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable."),
) -> None:
    """List dead letters readably: reason, sale_id, where from, when, why."""
    from stream_app.dlq import show

    show(get_settings(), reason=reason, limit=limit, json_output=json_output)


@dlq_app.command("replay")
def dlq_replay(
    reason: str | None = typer.Option(None, help="Only this reason code."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be sent; send nothing."),
) -> None:
    """Send stream-side dead letters back through validation (after fixing their cause)."""
    from stream_app.dlq import replay

    typer.echo(replay(get_settings(), reason=reason, dry_run=dry_run).line())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("salesflow: aborted", err=True)
        return 130
    except SalesflowError as exc:
        if _debug:
            raise
        typer.echo(f"salesflow: {exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
