"""`salesflow dlq show | replay`."""

from __future__ import annotations

import typer

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter topic.")


@dlq_app.command("show")
def dlq_show(
    reason: str | None = typer.Option(None, help="Only this reason code."),
    limit: int = typer.Option(50, min=0, help="Show the newest N (0: all)."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable."),
) -> None:
    """List dead letters readably: reason, sale_id, where from, when, why, the record.

    The record is the sale decoded from its Avro bytes, or the producer's CSV row."""
    from salesflow.settings import get_settings
    from stream_app.dlq import show

    show(get_settings(), reason=reason, limit=limit, json_output=json_output)


@dlq_app.command("replay")
def dlq_replay(
    reason: str | None = typer.Option(None, help="Only this reason code."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be sent; send nothing."),
) -> None:
    """Send stream-side dead letters back through validation (after fixing their cause)."""
    from salesflow.settings import get_settings
    from stream_app.dlq import replay

    typer.echo(replay(get_settings(), reason=reason, dry_run=dry_run).line())
