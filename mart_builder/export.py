"""`salesflow marts export` and `salesflow marts show`: the marts as files an analyst can take
away, and a quick look at one customer, store or month.

Reads through `MartWriter.read_table` (the writer's public API); nothing here writes SQL.
CSV: one file per mart, a header row, money as exact decimal text. Parquet: one dataset per
mart partitioned by month (`sales_date_month=YYYY-MM/`, `sales_month=YYYY-MM/`, as the seed
wrote its marts), money as decimal(14,2), readable by pyarrow, pandas and Spark.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from mart_builder.schema import (
    MART_TABLES,
    customers_data_mart,
    sales_anomalies,
    sales_team_data_mart,
)
from mart_builder.writer import MartWriter
from salesflow.errors import ConfigError

FORMATS = ("csv", "parquet")
# The column each mart's Parquet dataset is partitioned by (a month; the flags by rule).
PARTITION_COLUMN = {customers_data_mart.name: "sales_date_month",
                    sales_team_data_mart.name: "sales_month", sales_anomalies.name: "rule"}


@dataclass(frozen=True)
class Exported:
    table: str
    rows: int
    path: Path


def export(writer: MartWriter, out: Path, fmt: str) -> list[Exported]:
    """Write the marts (and the anomaly flags) under `out` in `fmt` (csv or parquet);
    returns what was written."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; one of: {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name in PARTITION_COLUMN:
        rows = writer.read_table(name)
        columns = list(MART_TABLES[name].columns.keys())
        if fmt == "csv":
            path = out / f"{name}.csv"
            write_csv(path, columns, rows)
        else:
            path = out / name
            write_parquet(path, name, columns, rows)
        done.append(Exported(name, len(rows), path))
    return done


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([_text(row[c]) for c in columns])


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def arrow_schema(name: str) -> Any:
    """The Arrow schema of a mart, from its table definition."""
    import pyarrow as pa
    import sqlalchemy as sa

    fields = []
    for column in MART_TABLES[name].columns:
        kind = column.type
        if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
            arrow = pa.decimal128(kind.precision or 14, kind.scale or 2)
        elif isinstance(kind, sa.Boolean):
            arrow = pa.bool_()
        elif isinstance(kind, sa.DateTime):
            arrow = pa.timestamp("s", tz="UTC")
        elif isinstance(kind, sa.BigInteger):
            arrow = pa.int64()
        elif isinstance(kind, sa.Integer):
            arrow = pa.int32()
        else:
            arrow = pa.string()
        fields.append(pa.field(column.name, arrow, nullable=column.nullable is not False
                               or column.name == PARTITION_COLUMN[name]))
    return pa.schema(fields)


def write_parquet(path: Path, name: str, columns: Sequence[str],
                  rows: Sequence[dict[str, Any]]) -> None:
    """A Hive-partitioned Parquet dataset (one folder per month, or per rule); replaces an
    older export."""
    import shutil

    import pyarrow as pa
    import pyarrow.dataset as ds

    schema = arrow_schema(name)
    data = {c: [_arrow_value(r[c]) for r in rows] for c in columns}
    table = pa.Table.from_pydict(data, schema=schema)
    month = PARTITION_COLUMN[name]
    if path.exists():
        shutil.rmtree(path)
    ds.write_dataset(table, path, format="parquet",
                     partitioning=ds.partitioning(pa.schema([(month, pa.string())]),
                                                  flavor="hive"),
                     existing_data_behavior="overwrite_or_ignore",
                     basename_template="part-{i}.parquet")
    if not rows:  # an empty mart is still a readable dataset
        path.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet as pq

        pq.write_table(table, path / "part-0.parquet")


def _arrow_value(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    return value


# --- marts show ----------------------------------------------------------------------------------


def show_rows(writer: MartWriter, *, customer: int | None = None, store: int | None = None,
              month: str | None = None, limit: int = 50) -> dict[str, list[dict[str, Any]]]:
    """The mart rows of one customer, one store and/or one month (YYYY-MM)."""
    if customer is None and store is None and month is None:
        raise ConfigError("give --customer ID, --store ID and/or --month YYYY-MM")
    out: dict[str, list[dict[str, Any]]] = {}
    if store is None:
        rows = [r for r in writer.read_customers()
                if (customer is None or r["customer_id"] == customer)
                and (month is None or r["sales_date_month"] == month)]
        out[customers_data_mart.name] = rows[:limit] if limit else rows
    if customer is None:
        rows = [r for r in writer.read_team()
                if (store is None or r["store_id"] == store)
                and (month is None or r["sales_month"] == month)]
        out[sales_team_data_mart.name] = rows[:limit] if limit else rows
    return out
