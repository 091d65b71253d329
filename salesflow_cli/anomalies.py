"""`salesflow anomalies`: the current anomaly flags (the `sales_anomalies` mart, see
docs/spec/anomalies.md), as a table with a count per rule for a person, or as JSON for a
script.

The rows come from `MartWriter.read_anomalies`, which filters in SQL; everything here is pure
shaping of those rows (money as exact decimal text, times as UTC), so it is tested without a
database. The database is only read: nothing is created or migrated by looking.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from salesflow.anomalies import RULES
from salesflow.settings import Settings

CENT = Decimal("0.01")
#: the columns of a flag, in the table's order (mart_builder.schema.sales_anomalies)
COLUMNS = ("rule", "entity", "customer_id", "store_id", "sales_person_id", "sale_id", "period",
           "observed", "expected", "first_flagged_at")
_MONEY = ("observed", "expected")

Flag = Mapping[str, Any]


def money_text(value: Any) -> str | None:
    """A DECIMAL(14,2) value as exact text with two decimals (`1234.50`), never a float's
    rounding or an exponent; None stays None."""
    if value is None:
        return None
    exact = value if isinstance(value, Decimal) else Decimal(str(value))
    return format(exact.quantize(CENT), "f")


def utc_text(value: datetime, sep: str = "T", zone: str = "Z") -> str:
    """A stored time (naive UTC, whole seconds in MySQL's DATETIME) as ISO 8601 to the second:
    `2026-01-02T03:04:05Z`. An aware time is converted to UTC first."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=sep, timespec="seconds") + zone


def flag_json(flag: Flag) -> dict[str, Any]:
    """One flag as a JSON-able object: decimals as strings, the time ISO 8601 with Z."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        value = flag.get(column)
        if column in _MONEY:
            value = money_text(value)
        elif isinstance(value, datetime):
            value = utc_text(value)
        out[column] = value
    return out


def flags_json(flags: Iterable[Flag]) -> str:
    return json.dumps([flag_json(f) for f in flags], ensure_ascii=False, indent=1)


def counts_by_rule(flags: Iterable[Flag], rule: str | None = None) -> dict[str, int]:
    """Flags per rule, in the spec's order of the rules: every rule (0 when none), or only
    `rule` when the listing was of one; a rule this release does not know comes last."""
    counts = dict.fromkeys([rule] if rule else RULES, 0)
    for flag in flags:
        counts[flag["rule"]] = counts.get(flag["rule"], 0) + 1
    return counts


def since_start(day: date | datetime) -> datetime:
    """`--since DAY`: the start of that day, UTC (naive, like the stored times)."""
    return datetime(day.year, day.month, day.day)


def selection(rule: str | None, since: date | None) -> str:
    """The filters as words, for the title and the empty message: ` of rule X since D`."""
    parts = []
    if rule:
        parts.append(f" of rule {rule}")
    if since:
        parts.append(f" first flagged since {since.isoformat()} (UTC)")
    return "".join(parts)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def render(console: Any, flags: Sequence[Flag], rule: str | None = None,
           since: date | None = None) -> None:
    """The flags as a table (oldest flag first) and a line counting them per rule."""
    from rich.table import Table

    if not flags:
        console.print(f"no anomaly flags{selection(rule, since)}")
        return
    money = [(money_text(f.get("observed")) or "", money_text(f.get("expected")) or "")
             for f in flags]
    table = Table(title=f"anomaly flags{selection(rule, since)}: {len(flags)}",
                  title_justify="left")
    # Money is never cut, folded or ellipsized (a shortened amount would be a wrong number):
    # on a narrow terminal the other columns fold instead. A sale's id is in its entity
    # (`sale:<id>`), so it has no column of its own here (the JSON has it).
    table.add_column("first flagged (UTC)", overflow="fold", style="dim")
    table.add_column("rule", overflow="fold", style="bold yellow")
    table.add_column("entity", overflow="fold")
    for header in ("customer", "store", "salesperson"):
        table.add_column(header, justify="right", overflow="fold")
    table.add_column("period", overflow="fold")
    for header, at in (("observed", 0), ("expected", 1)):
        table.add_column(header, justify="right", no_wrap=True,
                         min_width=max(len(header), *(len(m[at]) for m in money)))
    for flag, (observed, expected) in zip(flags, money, strict=True):
        table.add_row(utc_text(flag["first_flagged_at"], sep=" ", zone=""), flag["rule"],
                      flag["entity"], _cell(flag.get("customer_id")),
                      _cell(flag.get("store_id")), _cell(flag.get("sales_person_id")),
                      flag["period"], observed, expected)
    console.print(table)
    console.print("by rule: " + ", ".join(
        f"{name} {n}" for name, n in counts_by_rule(flags, rule).items()))


def run(settings: Settings, rule: str | None, since: date | None, json_output: bool,
        console: Any) -> None:
    """Read the flags from the mart database and print them (table or JSON)."""
    from mart_builder.db import make_engine
    from mart_builder.writer import MartWriter

    engine = make_engine(settings)
    try:
        flags = MartWriter(engine).read_anomalies(
            rule=rule, since=since_start(since) if since else None)
    finally:
        engine.dispose()
    if json_output:
        import typer

        typer.echo(flags_json(flags))
        return
    render(console, flags, rule, since)
