"""`salesflow status`: is the pipeline keeping up, and does every record add up?

Counts come from the stream app's `counts` table changelog (exact across crashes: written in
the same transactions as everything they count), lag from the consumer group, flush times and
row counts from the mart database.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mart_builder.commands import open_writer
from salesflow.errors import SalesflowError
from salesflow.kafka import group_lag, read_all
from salesflow.settings import Settings
from salesflow.tables import COUNTS, COUNTS_KEY, PartitionCounts
from salesflow.topics import Topics


@dataclass
class Status:
    records_in: int = 0
    accepted: int = 0
    exact_replays: int = 0
    pending: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    last_flush: dict[str, Any] | None = None
    last_flush_error: dict[str, Any] | None = None  # newest failed flush: finished_at, error
    quarantined: dict[str, int] = field(default_factory=dict)  # refused mart rows, per mart
    mart_rows: dict[str, int] = field(default_factory=dict)
    database_error: str | None = None

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def reconciled(self) -> bool:
        """`in = accepted + replays + dead-lettered` (+ sales still waiting for a dimension)."""
        return self.records_in == (self.accepted + self.exact_replays +
                                   self.dead_lettered_total + self.pending)

    def to_json(self) -> str:
        data = asdict(self) | {"dead_lettered_total": self.dead_lettered_total,
                               "reconciled": self.reconciled}
        return json.dumps(data, default=str, indent=2)


def partition_counts(settings: Settings) -> dict[int, PartitionCounts]:
    """The latest `PartitionCounts` of every sales partition."""
    latest: dict[int, PartitionCounts] = {}
    for msg in read_all(settings, Topics(settings.namespace).changelog(COUNTS)):
        if msg.key() == COUNTS_KEY and msg.value():
            latest[msg.partition()] = PartitionCounts.decode(msg.value())
    return latest


def stream_totals(settings: Settings) -> PartitionCounts:
    """Every partition's counts, summed."""
    total = PartitionCounts()
    for counts in partition_counts(settings).values():
        total.add(counts)
    return total


def collect(settings: Settings) -> Status:
    topics = Topics(settings.namespace)
    totals = stream_totals(settings)
    status = Status(
        records_in=totals.records_in, accepted=totals.accepted, exact_replays=totals.replays,
        pending=totals.waiting,
        dead_lettered={k: v for k, v in sorted(totals.dead_lettered.items()) if v},
        lag=group_lag(settings, topics.app_id, topics.sales),
    )
    try:
        writer = open_writer(settings)
        status.last_flush = writer.last_run("flush")
        failure = writer.last_run("failure")
        if failure:
            status.last_flush_error = {"finished_at": failure["finished_at"],
                                       "error": failure["error"]}
        for entry in writer.quarantined():
            status.quarantined[entry["mart"]] = status.quarantined.get(entry["mart"], 0) + 1
        status.mart_rows = writer.row_counts()
    except SalesflowError as exc:
        status.database_error = str(exc)
    return status


def render(report: Status, console: Console) -> None:
    table = Table(title="salesflow status", show_header=False)
    table.add_row("records in", f"{report.records_in:,}")
    table.add_row("accepted", f"{report.accepted:,}")
    table.add_row("exact replays (dropped)", f"{report.exact_replays:,}")
    table.add_row("waiting for a dimension", f"{report.pending:,}")
    for reason, n in report.dead_lettered.items():
        table.add_row(f"dead-lettered: {reason}", f"{n:,}")
    table.add_row("in = accepted + replays + dead-lettered",
                  "[green]holds[/]" if report.reconciled else "[red]DOES NOT HOLD[/]")
    table.add_row("consumer lag", f"{sum(report.lag.values()):,} "
                  f"({', '.join(f'p{p}: {n}' for p, n in sorted(report.lag.items()))})")
    flush = report.last_flush
    table.add_row("last flush", f"{flush['finished_at']} UTC, {flush['duration_seconds']:.2f}s"
                  if flush else "never")
    failure = report.last_flush_error
    if failure:
        newer = not flush or failure["finished_at"] > flush["finished_at"]
        table.add_row("last flush error", f"[{'red' if newer else 'dim'}]"
                      f"{failure['finished_at']} UTC: {escape(failure['error'] or '')}[/]")
    for name, n in report.quarantined.items():
        table.add_row(f"quarantined rows: {name}", f"[red]{n:,}[/]")
    for name, n in report.mart_rows.items():
        table.add_row(f"rows: {name}", f"{n:,}")
    if report.database_error:
        table.add_row("database", f"[red]{report.database_error}[/]")
    console.print(table)
