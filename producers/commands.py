"""`salesflow produce ...`: thin commands over the producer functions."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from producers.dims import produce_dims
from producers.generate import GenerateSpec, write_dimensions
from producers.sales import produce_sales
from salesflow.settings import get_settings

produce_app = typer.Typer(no_args_is_help=True, help="Publish dimensions and sales to Kafka.")
console = Console(stderr=True)


@produce_app.command("dims")
def dims_command(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                              help="Folder with customer.csv, store.csv, "
                                                   "product.csv, sales_team.csv")],
) -> None:
    """Publish the dimension files of DIR to their compacted topics; prints records sent per
    dimension and rows dead-lettered by reason."""
    typer.echo(produce_dims(get_settings(), directory, on_wait=_say_waiting).line())


@produce_app.command("sales")
def sales_command(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="Sales CSV files")],
    batch_size: Annotated[int, typer.Option(min=1, max=5000,
                                            help="Sales packed per Kafka message")] = 500,
) -> None:
    """Publish sales CSV files; prints read / sent / dead-lettered (by reason)."""
    summary = _send_sales(files, batch_size)
    typer.echo(summary.line())


def _send_sales(files: list[Path], batch_size: int = 500):
    from salesflow.progress import sales_progress

    total = sum(max(0, p.read_bytes().count(b"\n") - 1) for p in files)
    with sales_progress(console, "sending", total, unit="rows") as advance:
        return produce_sales(get_settings(), files, batch_size=batch_size,
                             on_progress=advance, on_wait=_say_waiting)


def _say_waiting(message: str) -> None:
    """A producer riding out a Kafka outage says so (on stderr, like the progress bar)."""
    console.print(f"[yellow]{message}[/]", highlight=False)


def _generate(folder: Path, spec: GenerateSpec) -> Path:
    """`generate()` with a progress bar: the same rows, byte for byte."""
    import csv

    from producers.generate import SALES_HEADER, sale_rows
    from salesflow.progress import sales_progress

    write_dimensions(folder, spec)
    sales = folder / "sales.csv"
    step = max(1, min(10_000, spec.rows // 100))
    with sales_progress(console, "generating", spec.rows, unit="rows") as advance, \
            sales.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(SALES_HEADER)
        for n, row in enumerate(sale_rows(spec), 1):
            writer.writerow(row)
            if n % step == 0:
                advance(step)
        advance(spec.rows % step)
    return sales


@produce_app.command("generate")
def generate_command(
    rows: Annotated[int, typer.Option(min=0, help="Number of sales rows")] = 10_000,
    customers: Annotated[int, typer.Option(min=1)] = 500,
    seed: Annotated[int, typer.Option()] = 42,
    start: Annotated[str, typer.Option(help="First sales date (YYYY-MM-DD)")] = "2024-01-01",
    end: Annotated[str, typer.Option(help="Last sales date (YYYY-MM-DD)")] = "2025-12-31",
    bad_fraction: Annotated[float, typer.Option(min=0.0, max=1.0,
                                                help="Share of rows that break a rule")] = 0.0,
    anomalies: Annotated[int, typer.Option(min=0, help="Cases of each anomaly rule to plant "
                                                       "(price_off_list, multi_store_day, "
                                                       "customer_spend_spike, "
                                                       "salesperson_spike)")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write CSV files here")] = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka",
                                           help="Publish straight to Kafka")] = False,
) -> None:
    """Seeded synthetic dimensions and sales, to CSV files and/or straight to Kafka."""
    spec = GenerateSpec(rows=rows, customers=customers, seed=seed,
                        start=date.fromisoformat(start), end=date.fromisoformat(end),
                        bad_fraction=bad_fraction, anomalies=anomalies)
    if out is None and not to_kafka:
        raise typer.BadParameter("give --out DIR, --to-kafka, or both")
    with tempfile.TemporaryDirectory() as tmp:
        folder = out or Path(tmp)
        if rows:
            sales = _generate(folder, spec)
        else:
            write_dimensions(folder, spec)
            sales = None
        typer.echo(f"wrote {rows} sales and the dimensions to {folder}" if out else "generated")
        if to_kafka:
            produce_dims(get_settings(), folder, on_wait=_say_waiting)
            if sales is not None:
                typer.echo(_send_sales([sales]).line())
