"""`salesflow marts follow | flush | rebuild`."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

from mart_builder.builder import FlushResult, MartBuilder
from mart_builder.db import ensure_database, make_engine
from mart_builder.rebuild import rebuild
from mart_builder.schema import migrate
from mart_builder.writer import MartWriter
from salesflow.kafka import check_reachable, wait_for_group
from salesflow.retry import retry
from salesflow.settings import Settings, get_settings
from salesflow.topics import Topics

marts_app = typer.Typer(no_args_is_help=True, help="The customer and sales-team data marts.")
console = Console(stderr=True)


def open_writer(settings: Settings, attempts: int = 5) -> MartWriter:
    """An engine on the mart database (created when missing), migrated to this release's
    schema."""
    engine = make_engine(settings)

    def prepare() -> None:
        ensure_database(engine)
        migrate(engine)

    retry(prepare, dependency="database", attempts=attempts)
    return MartWriter(engine)


@marts_app.command("flush")
def flush_command(
    timeout: float = typer.Option(300.0, help="Seconds to wait for the stream app."),
) -> None:
    """Make the marts reflect everything processed so far, then return."""
    settings = get_settings()
    topics = Topics(settings.namespace)
    check_reachable(settings)
    with console.status("waiting for the stream app to process what is in the topic"):
        wait_for_group(settings, topics.app_id, topics.sales, timeout)
    builder = MartBuilder(settings, open_writer(settings))
    try:
        result = retry(builder.flush, dependency="database")
    finally:
        builder.close()
    typer.echo(f"flushed: {result.customer_rows} customer rows, {result.team_rows} team rows "
               f"written in {result.seconds:.2f}s{_refused(result)}")


@marts_app.command("rebuild")
def rebuild_command() -> None:
    """Recompute both marts from the full history of valid sales; swap them in atomically."""
    from salesflow.counts import stream_totals
    from salesflow.progress import sales_progress

    settings = get_settings()
    check_reachable(settings)
    writer = open_writer(settings)
    total = stream_totals(settings).accepted or None  # what the valid-sales history holds
    with sales_progress(console, "rebuilding from the valid-sales history", total) as advance:
        result = rebuild(settings, writer, on_progress=advance)
    typer.echo(f"rebuilt: {result.customer_rows} customer rows, {result.team_rows} team rows "
               f"in {result.seconds:.2f}s{_refused(result)}")


def _refused(result: FlushResult) -> str:
    if not result.refused:
        return ""
    return (f"; {len(result.refused)} row(s) refused by the database and quarantined "
            f"(salesflow status): {result.refused[0].error}")


@marts_app.command("follow")
def follow_command(
    loglevel: str = typer.Option("info", help="Log level (debug, info, warning)."),
) -> None:
    """Keep the marts current: flush every SALESFLOW_FLUSH_INTERVAL_SECONDS until SIGTERM.

    Run one per namespace; a second one waits as a hot standby and takes over within seconds
    when the first stops or dies.
    """

    from mart_builder.follow import run_follower

    logging.getLogger("salesflow").setLevel(loglevel.upper())
    run_follower(get_settings())
