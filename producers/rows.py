"""CSV rows in the seed's layouts turned into records of our Avro schemas (pure, no I/O).

Every field is read strictly (`salesflow.parsing`). A sales row that lacks a field is
`missing_field`, one that cannot be read as its types is `unparseable`, one whose values the
marts cannot hold is `out_of_bounds` (in that order, as the data contract lists them); such
rows never reach Kafka as sales but go to the dead-letter topic with the row itself. The
business rules (quantity ≥ 1, totals, dates, references) are the stream app's.

A file without a `sale_id` column gets ids from each row's parsed values and its occurrence
number among identical rows of the file (`derived_sale_id`): the same sale keeps its id when
the file is re-exported, reordered, extended or fixed and sent again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from salesflow.dead_letters import Reason, Rejection
from salesflow.dimensions import ID_FIELD, bounds_rejection
from salesflow.parsing import ParseError, parse_cents, parse_date, parse_int
from salesflow.sale import (
    EPOCH,
    MAX_ID,
    MAX_MONEY_CENTS,
    MAX_QUANTITY,
    MAX_TEXT,
    Sale,
    bounds_violation,
    money,
)

SALE_FIELDS = ("sale_id", "customer_id", "store_id", "product_name", "sales_date",
               "sales_person_id", "price", "quantity", "total_cost")
VALUE_FIELDS = SALE_FIELDS[1:]  # what a row says besides its id
MIN_WIRE_INT = -(2**31)  # quantity is an Avro int


def _blank(value: str | None) -> bool:
    return not value or value.isspace()


def parse_sale_row(row: dict[str, str | None], *, with_id: bool = True) -> Sale | Rejection:
    """A sales CSV row (header → text) as a `Sale`, or the reason it cannot be one.

    Without `with_id` the row's `sale_id` is not read and the Sale's id is empty: the caller
    derives it (`derived_sale_id`).
    """
    fields = SALE_FIELDS if with_id else VALUE_FIELDS
    values = [row.get(f) for f in fields]
    if not all(values) or any(map(str.isspace, values)):  # type: ignore[arg-type]
        missing = [f for f in fields if _blank(row.get(f))]
        return Rejection(Reason.MISSING_FIELD, f"empty or absent: {', '.join(missing)}")
    field = "customer_id"
    try:
        customer_id = parse_int(row["customer_id"])  # type: ignore[arg-type]
        field = "store_id"
        store_id = parse_int(row["store_id"])  # type: ignore[arg-type]
        field = "sales_date"
        sales_date = parse_date(row["sales_date"])  # type: ignore[arg-type]
        field = "sales_person_id"
        person = parse_int(row["sales_person_id"])  # type: ignore[arg-type]
        field = "price"
        price = parse_cents(row["price"])  # type: ignore[arg-type]
        field = "quantity"
        quantity = parse_int(row["quantity"])  # type: ignore[arg-type]
        field = "total_cost"
        total = parse_cents(row["total_cost"])  # type: ignore[arg-type]
    except ParseError as exc:
        return Rejection(Reason.UNPARSEABLE, f"{field}: {exc}")
    sale = Sale(row["sale_id"] if with_id else "", customer_id,  # type: ignore[arg-type]
                store_id, row["product_name"], sales_date, person,  # type: ignore[arg-type]
                price, quantity, total)
    if 1 <= customer_id <= MAX_ID and 1 <= store_id <= MAX_ID and 1 <= person <= MAX_ID \
            and MIN_WIRE_INT <= quantity <= MAX_QUANTITY and price <= MAX_MONEY_CENTS and \
            total <= MAX_MONEY_CENTS and len(sale.product_name) <= MAX_TEXT and \
            len(sale.sale_id) <= MAX_TEXT:  # within every bound: the usual case, fast
        return sale
    why = bounds_violation(sale) or f"quantity {quantity} is below {MIN_WIRE_INT:,}"
    return Rejection(Reason.OUT_OF_BOUNDS, why)


def parse_sale(row: dict[str, str | None]) -> dict[str, Any] | Rejection:
    """A sales CSV row as a `Sale` record (logical types: date, Decimal), or why not."""
    sale = parse_sale_row(row)
    return sale if isinstance(sale, Rejection) else sale.to_record()


def wire_record(sale: Sale) -> dict[str, Any]:
    """A Sale record with the Avro encodings of its logical types already applied (days since
    1970, unscaled two's-complement decimals): the producer's hot path, about twice as fast to
    encode as `Sale.to_record`, and the same bytes on the wire."""
    return {
        "sale_id": sale.sale_id, "customer_id": sale.customer_id, "store_id": sale.store_id,
        "product_name": sale.product_name, "sales_date": sale.sales_date.toordinal() - EPOCH,
        "sales_person_id": sale.sales_person_id, "price": _unscaled(sale.price_cents),
        "quantity": sale.quantity, "total_cost": _unscaled(sale.total_cents),
    }


def _unscaled(cents: int) -> bytes:
    return cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)


# --- ids of files without a sale_id column ---------------------------------------------------

def content_key(sale: Sale) -> bytes:
    """16 bytes that name a row's parsed values (not its id, not its spelling: `50.0` and
    `50.00` are the same price)."""
    text = (f"{sale.customer_id}\x1f{sale.store_id}\x1f{sale.product_name}\x1f"
            f"{sale.sales_date.isoformat()}\x1f{sale.sales_person_id}\x1f{sale.price_cents}"
            f"\x1f{sale.quantity}\x1f{sale.total_cents}")
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16,
                           person=b"salesflow-row").digest()


def derived_sale_id(key: bytes, occurrence: int) -> str:
    """The id of the `occurrence`-th (1, 2, …) row of a file with the values `key` names:
    `row-<32 hex digits>`, and `-2`, `-3`, … after it for the second, third identical row."""
    return f"row-{key.hex()}" if occurrence == 1 else f"row-{key.hex()}-{occurrence}"


# --- dimensions ------------------------------------------------------------------------------

COLUMNS = {  # each dimension file's columns (data-contract.md, "Input files")
    "customer": ("customer_id", "first_name", "last_name", "address", "pincode",
                 "phone_number", "customer_joining_date"),
    "store": ("id", "address", "store_pincode", "store_manager_name", "store_opening_date",
              "reviews"),
    "product": ("id", "name", "current_price", "old_price", "created_date", "updated_date",
                "expiry_date"),
    "sales_team": ("id", "first_name", "last_name", "manager_id", "is_manager", "address",
                   "pincode", "joining_date"),
}
REQUIRED = {"customer": ("customer_id",), "store": ("id",),
            "product": ("id", "name", "current_price"), "sales_team": ("id",)}
_INTS = {"customer_id", "id", "manager_id"}
_MONEY = {"current_price", "old_price"}
_DATES = {"customer_joining_date", "store_opening_date", "created_date", "updated_date",
          "expiry_date", "joining_date"}
_OPTIONAL_TEXT = {"reviews"}  # nullable strings: empty means null


@dataclass(frozen=True, slots=True)
class DimensionRow:
    id: int
    record: dict[str, Any]  # with logical types (date, Decimal), for the codec


def dimension_row(name: str, row: dict[str, str | None]) -> DimensionRow | Rejection:
    """A dimension CSV row as its record, or why it cannot be one (`missing_field`,
    `unparseable`, `out_of_bounds`: the same bounds every reader of the topic applies)."""
    missing = [f for f in REQUIRED[name] if _blank(row.get(f))]
    if missing:
        return Rejection(Reason.MISSING_FIELD, f"empty or absent: {', '.join(missing)}")
    record: dict[str, Any] = {}
    for column in COLUMNS[name]:
        text = row.get(column) or ""
        try:
            if column in _INTS:
                record[column] = parse_int(text) if text else None
            elif column in _MONEY:
                record[column] = money(parse_cents(text)) if text else None
            elif column in _DATES:
                record[column] = parse_date(text) if text else None
            elif column in _OPTIONAL_TEXT:
                record[column] = text or None
            else:
                record[column] = text
        except ParseError as exc:
            return Rejection(Reason.UNPARSEABLE, f"{column}: {exc}")
    rejection = bounds_rejection(name, record)
    if rejection is not None:
        return rejection
    return DimensionRow(record[ID_FIELD[name]], record)


def parse_dimension(name: str, row: dict[str, str | None]) -> tuple[int, dict[str, Any]]:
    """`dimension_row` as (id, record); raises ValueError for a row that cannot be one."""
    if name not in COLUMNS:
        raise ValueError(f"unknown dimension {name!r}")
    read = dimension_row(name, row)
    if isinstance(read, Rejection):
        raise ValueError(f"{read.reason.value}: {read.message}")
    return read.id, read.record

