"""The verbs that are not a group: status, stream, tail, migrate, anomalies, demo.

Each imports what it needs inside its function, so `salesflow --help` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import typer

from salesflow.anomalies import RULES
from stream_app.commands import stream_command

# `--rule`'s choices, from the one list of rules (typer turns an Enum into a usage error
# naming the valid values, exit 2).
RuleName = Enum("RuleName", {name: name for name in RULES}, type=str)


def register(app: typer.Typer) -> None:
    app.command("stream")(stream_command)
    app.command("status")(status)
    app.command("tail")(tail)
    app.command("migrate")(migrate)
    app.command("anomalies")(anomalies)
    app.command("demo")(demo)


def status(
    json_output: bool = typer.Option(False, "--json", help="Machine-readable (JSON)."),
    watch: float | None = typer.Option(None, "--watch", min=1.0, metavar="SECONDS",
                                       help="Refresh every SECONDS until Ctrl-C."),
) -> None:
    """Are we keeping up? Workers, rates, lag, waiting sales, reconciliation, flushes.

    Shows the live workers and their partitions, sales in and accepted per second over the
    last minute, the lag in messages and in sales with the time to catch up, the sales
    waiting for a dimension, the reconciliation of every record (dead letters by side), the
    last flush and the mart rows. Exits 1 when Kafka or the mart database does not answer
    (with --json too)."""
    from salesflow.settings import get_settings
    from salesflow_cli.status import run

    code = run(get_settings(), json_output, watch)
    if code:
        raise typer.Exit(code)


def tail(
    topic: str = typer.Argument(..., help="A topic, or its short name: sales, dlq, valid, "
                                          "customer, store, product, sales_team, counts, ..."),
    last: int = typer.Option(10, "--last", min=0, help="Start N messages before the end of "
                                                        "each partition."),
    from_beginning: bool = typer.Option(False, "--from-beginning",
                                        help="Start at the first message."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new messages."),
    limit: int = typer.Option(0, min=0, help="Stop after N messages (0: no limit)."),
) -> None:
    """Print the records of a topic, decoded, one JSON object per line.

    Avro (single-object or Confluent framing), packed sales, dead-letter headers and the
    stream app's table values are all made readable."""
    from salesflow.settings import get_settings
    from salesflow_cli.tail import run

    run(get_settings(), topic, last=None if from_beginning else last, follow=follow,
        limit=limit)


def migrate(
    to: str = typer.Option(..., "--to", help="The new, empty namespace."),
    partitions: int = typer.Option(..., min=1, help="Partitions of its topics."),
) -> None:
    """Copy a namespace's dimensions and accepted sales into a new namespace (to change the
    partition count; stop producers and workers first)."""
    from salesflow.settings import get_settings
    from stream_app.migrate import migrate as run

    settings = get_settings()
    typer.echo(run(settings, to, partitions).line(settings.namespace, to))


def anomalies(
    rule: RuleName | None = typer.Option(None, "--rule", case_sensitive=False,  # noqa: B008
                                         help="Only this rule's flags."),
    since: datetime | None = typer.Option(None, "--since", formats=["%Y-%m-%d"],  # noqa: B008
                                          metavar="YYYY-MM-DD",
                                          help="Only flags first raised on or after this day "
                                               "(UTC)."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable (JSON)."),
) -> None:
    """List the current anomaly flags (sales and behaviour worth a second look).

    Read from the sales_anomalies mart, oldest flag first, with a count per rule. A flag is
    not a rejection: flagged sales are valid and counted in the marts as usual."""
    from rich.console import Console

    from salesflow.settings import get_settings
    from salesflow_cli.anomalies import run

    run(get_settings(), rule.value if rule else None, since.date() if since else None,
        json_output, Console())


def demo(rows: int = typer.Option(20_000, min=100, help="Sales to generate.")) -> None:
    """The main job end to end on the embedded defaults, then an explained summary."""
    from rich.console import Console

    from salesflow.settings import get_settings
    from salesflow_cli.demo import run_demo

    run_demo(get_settings(), rows, Console())
