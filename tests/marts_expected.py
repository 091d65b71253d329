"""The worked examples (`tests/data/`) and a cell-by-cell mart comparator, shared by tests.

Unit tests feed the examples through the pure metric math; integration tests read the marts
back from a database. Both compare against the expected CSVs with `assert_marts_equal`, which
normalises each side (CSV strings, Python values, or what a DB driver returns) to one typed
form first, so `'10.50'`, `Decimal('10.5')` and `10.5` are the same cell and `''` is NULL.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mart_builder.model import Customer, SalesPerson
from salesflow.sale import Sale

DATA_DIR = Path(__file__).parent / "data"

CUSTOMER_KEY = ("customer_id", "sales_date_month")
TEAM_KEY = ("store_id", "sales_person_id", "sales_month")

# Rejections that mean "a later copy of an accepted sale_id": the first copy stays valid.
DUPLICATE_REASONS = frozenset({"duplicate", "conflicting_duplicate"})

_INT = frozenset({
    "customer_id", "store_id", "sales_person_id", "purchase_frequency",
    "top_performance_rank", "total_transactions",
})
_DECIMAL = frozenset({
    "total_sales", "customer_lifetime_value", "monetary_value", "avg_monthly_spending",
    "max_single_transaction", "avg_time_between_purchases", "avg_sales_per_month", "incentive",
    "sales_growth_rate", "year_to_date_sales", "month_over_month_variance",
    "avg_transaction_value", "sales_contribution_percentage",
})
_BOOL = frozenset({"inactive_status"})
_MONTH = frozenset({
    "sales_date_month", "first_purchase_month", "last_purchase_month", "sales_month",
    "first_sale_month", "last_sale_month",
})
_TRUE, _FALSE = {"true", "t", "1", "yes"}, {"false", "f", "0", "no"}


# --- loading the examples ---------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    """All rows of a CSV file as dicts of strings (quoted fields may hold newlines)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def csv_columns(path: Path) -> list[str]:
    """The header of a CSV file."""
    with path.open(encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh))


def load_expected_customers(data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    return read_csv(data_dir / "expected_customers_data_mart.csv")


def load_expected_team(data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    return read_csv(data_dir / "expected_sales_team_data_mart.csv")


def load_customers(data_dir: Path = DATA_DIR) -> dict[int, Customer]:
    return {
        int(r["customer_id"]): Customer(
            int(r["customer_id"]), r["first_name"], r["last_name"], r["address"],
            r["pincode"], r["phone_number"],
        )
        for r in read_csv(data_dir / "customer.csv")
    }


def load_sales_people(data_dir: Path = DATA_DIR) -> dict[int, SalesPerson]:
    return {
        int(r["id"]): SalesPerson(int(r["id"]), r["first_name"], r["last_name"])
        for r in read_csv(data_dir / "sales_team.csv")
    }


def load_valid_sale_rows(data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    """The example sales that must reach the marts, in input order.

    `expected_rejections.csv` names each rejected row by its 0-based position in
    sales_part1.csv + sales_part2.csv (and its sale_id): every listed row is dropped, which
    for `duplicate` / `conflicting_duplicate` leaves the first copy of the sale_id in place.
    """
    rows = read_csv(data_dir / "sales_part1.csv") + read_csv(data_dir / "sales_part2.csv")
    rejected: dict[int, str] = {}
    for r in read_csv(data_dir / "expected_rejections.csv"):
        index, sale_id = int(r["row"]), r["sale_id"]
        if rows[index]["sale_id"] != sale_id:
            found = rows[index]["sale_id"]
            raise AssertionError(f"rejection row {index} is sale {found}, not {sale_id}")
        rejected[index] = r["reason"]
    valid = [row for i, row in enumerate(rows) if i not in rejected]
    duplicated = {
        rows[i]["sale_id"] for i, reason in rejected.items() if reason in DUPLICATE_REASONS
    }
    seen = [row["sale_id"] for row in valid]
    if len(seen) != len(set(seen)) or not duplicated <= set(seen):
        raise AssertionError("each duplicated sale_id must keep exactly its first copy")
    return valid


def to_sale(row: Mapping[str, str]) -> Sale:
    """One valid sales CSV row as a Sale (cents exact from the decimal amounts)."""
    amounts = []
    for name in ("price", "total_cost"):
        cents = Decimal(row[name]) * 100
        if cents != cents.to_integral_value():
            raise ValueError(f"{name} {row[name]!r} has more than 2 decimals")
        amounts.append(int(cents))
    return Sale(
        sale_id=row["sale_id"],
        customer_id=int(row["customer_id"]),
        store_id=int(row["store_id"]),
        product_name=row["product_name"],
        sales_date=date.fromisoformat(row["sales_date"]),
        sales_person_id=int(row["sales_person_id"]),
        price_cents=amounts[0],
        quantity=int(row["quantity"]),
        total_cents=amounts[1],
    )


def load_valid_sales(data_dir: Path = DATA_DIR) -> list[Sale]:
    return [to_sale(r) for r in load_valid_sale_rows(data_dir)]


# --- comparing marts --------------------------------------------------------------------------


def normalise_value(column: str, value: Any) -> Any:
    """One cell in a canonical typed form: None, int, Decimal, bool or str."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        if column in _INT:
            return int(str(value).strip())
        if column in _DECIMAL:
            return Decimal(str(value).strip())
        if column in _BOOL:
            if isinstance(value, bool | int):
                return bool(value)
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError("not a boolean")
        if column in _MONTH and isinstance(value, date):
            return f"{value.year:04d}-{value.month:02d}"
    except (ValueError, InvalidOperation) as exc:
        raise AssertionError(f"column {column}: cannot read {value!r} ({exc})") from None
    return str(value)


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    if hasattr(row, "_mapping"):  # an SQLAlchemy Row
        return row._mapping
    raise TypeError(f"cannot read a mart row from {type(row).__name__}")


def normalise_rows(
    rows: Iterable[Any], key_columns: Sequence[str], side: str
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by primary key, every cell normalised; a repeated key is an error."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for raw in rows:
        row = {c: normalise_value(c, v) for c, v in _as_mapping(raw).items()}
        key = tuple(row.get(c) for c in key_columns)
        if key in out:
            raise AssertionError(f"{side} has the primary key {key} twice")
        out[key] = row
    return out


def assert_marts_equal(
    actual_rows: Iterable[Any],
    expected_rows: Iterable[Any],
    key_columns: Sequence[str],
    columns: Sequence[str] | None = None,
    max_report: int = 40,
) -> None:
    """Fail unless both sides have the same primary keys and equal cells in every column.

    Rows may be dicts (strings or typed values), dataclasses or SQLAlchemy rows. `columns`
    defaults to the expected side's columns; extra columns on the actual side are ignored.
    """
    actual = normalise_rows(actual_rows, key_columns, "actual")
    expected = normalise_rows(expected_rows, key_columns, "expected")
    if columns is None:
        columns = list(dict.fromkeys(c for row in expected.values() for c in row))
    problems = [f"missing row {k}" for k in sorted(expected.keys() - actual.keys(), key=str)]
    problems += [f"unexpected row {k}" for k in sorted(actual.keys() - expected.keys(), key=str)]
    for key in sorted(expected.keys() & actual.keys(), key=str):
        for column in columns:
            if column not in actual[key]:
                problems.append(f"{key}: column {column} is missing")
            elif actual[key][column] != expected[key].get(column):
                problems.append(
                    f"{key} {column}: actual {actual[key][column]!r} "
                    f"!= expected {expected[key].get(column)!r}"
                )
    if problems:
        shown = "\n  ".join(problems[:max_report])
        hidden = len(problems) - max_report
        more = f"\n  ... and {hidden} more" if hidden > 0 else ""
        raise AssertionError(f"{len(problems)} mart difference(s):\n  {shown}{more}")
