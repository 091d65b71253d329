"""`salesflow marts ...`: follow, flush, rebuild (mart_builder.commands), plus export and show.

The marts database is opened read-only here (no migration): exporting or looking must never
change the user's database.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mart_builder.commands import marts_app


def _reader():
    from mart_builder.db import make_engine
    from mart_builder.writer import MartWriter
    from salesflow.settings import get_settings

    return MartWriter(make_engine(get_settings()))


@marts_app.command("export")
def export_command(
    out: Path = typer.Option(..., "--out", file_okay=False,  # noqa: B008
                             help="Folder to write into."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet (partitioned by month)."),
) -> None:
    """Write both marts to files (CSV, or Parquet partitioned by month).

    CSV: one file per mart. Parquet: one dataset per mart, one folder per month, money as
    decimal(14,2): for pandas, Spark, DuckDB or a spreadsheet."""
    from mart_builder.export import export

    for done in export(_reader(), out, fmt.lower()):
        typer.echo(f"{done.table}: {done.rows:,} rows -> {done.path}")


@marts_app.command("show")
def show_command(
    customer: int | None = typer.Option(None, help="One customer's months."),
    store: int | None = typer.Option(None, help="One store's salespeople by month."),
    month: str | None = typer.Option(None, help="One month (YYYY-MM)."),
    limit: int = typer.Option(50, min=0, help="At most N rows per mart (0: all)."),
) -> None:
    """A quick look at the marts for a customer, a store or a month."""
    from rich.console import Console
    from rich.table import Table

    from mart_builder.export import show_rows

    console = Console()
    shown = show_rows(_reader(), customer=customer, store=store, month=month, limit=limit)
    for name, rows in shown.items():
        if not rows:
            console.print(f"{name}: no rows")
            continue
        table = Table(title=f"{name} ({len(rows)} rows)", title_justify="left")
        for column in rows[0]:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)
