"""CSV rows in the seed's layouts turned into records of our Avro schemas (pure, no I/O).

A sales row that lacks a field is `missing_field`, one that cannot be read as its types is
`unparseable` (in that order, as the data contract lists them); such rows never reach Kafka as
sales but go to the dead-letter topic with the row itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from salesflow.dead_letters import Reason, Rejection

SALE_FIELDS = ("sale_id", "customer_id", "store_id", "product_name", "sales_date",
               "sales_person_id", "price", "quantity", "total_cost")
CENT = Decimal("0.01")
MAX_MONEY = Decimal("999999999999.99")  # DECIMAL(14,2)


def money(text: str) -> Decimal:
    """Exact money at scale 2; anything that is not exactly representable is unparseable."""
    value = Decimal(text)
    if not value.is_finite() or abs(value) > MAX_MONEY:
        raise ValueError(f"{text!r} is not money")
    quantized = value.quantize(CENT)
    if quantized != value:
        raise ValueError(f"{text!r} has more than 2 decimals")
    return quantized


def cents(text: str) -> int:
    """`money(text)` in integer cents, with a fast path for the usual `123.45`."""
    head, dot, tail = text.strip().partition(".")
    digits = head[1:] if head[:1] == "-" else head
    if dot and len(tail) == 2 and tail.isdigit() and digits.isdigit() and len(digits) <= 12:
        whole = int(digits) * 100 + int(tail)
        return -whole if head[:1] == "-" else whole
    return int(money(text).scaleb(2))


Parsed = tuple[str, int, int, str, date, int, int, int, int]


def _parse(row: dict[str, str | None]) -> Parsed | Rejection:
    """The nine fields, typed, money in cents; or the reason they are not a sale."""
    values = [row.get(f) for f in SALE_FIELDS]
    if not all(v and not v.isspace() for v in values):
        missing = [f for f, v in zip(SALE_FIELDS, values, strict=True)
                   if not v or v.isspace()]
        return Rejection(Reason.MISSING_FIELD, f"empty or absent: {', '.join(missing)}")
    sale_id, customer, store, product, day, person, price, quantity, total = values
    field = "customer_id"
    try:
        customer_id = int(customer)  # type: ignore[arg-type]
        field = "store_id"
        store_id = int(store)  # type: ignore[arg-type]
        field = "sales_date"
        sales_date = date.fromisoformat(day.strip())  # type: ignore[union-attr]
        field = "sales_person_id"
        sales_person_id = int(person)  # type: ignore[arg-type]
        field = "price"
        price_cents = cents(price)  # type: ignore[arg-type]
        field = "quantity"
        qty = int(quantity)  # type: ignore[arg-type]
        field = "total_cost"
        total_cents = cents(total)  # type: ignore[arg-type]
    except (ValueError, InvalidOperation, TypeError):
        return Rejection(Reason.UNPARSEABLE, f"{field} {row.get(field)!r} is not a valid value")
    if not -(2**31) <= qty < 2**31 or any(
        not -(2**63) <= v < 2**63 for v in (customer_id, store_id, sales_person_id)
    ):
        return Rejection(Reason.UNPARSEABLE, "an integer field is out of range")
    return (sale_id, customer_id, store_id, product, sales_date,  # type: ignore[return-value]
            sales_person_id, price_cents, qty, total_cents)


def _record(row: dict[str, str | None], day: Callable[[date], Any],
            money_of: Callable[[int], Any]) -> dict[str, Any] | Rejection:
    parsed = _parse(row)
    if isinstance(parsed, Rejection):
        return parsed
    sale_id, customer_id, store_id, product, sales_date, person, price, qty, total = parsed
    return {
        "sale_id": sale_id, "customer_id": customer_id, "store_id": store_id,
        "product_name": product, "sales_date": day(sales_date), "sales_person_id": person,
        "price": money_of(price), "quantity": qty, "total_cost": money_of(total),
    }


def parse_sale(row: dict[str, str | None]) -> dict[str, Any] | Rejection:
    """A sales CSV row (header → text) as a `Sale` record, or why it cannot be one."""
    return _record(row, lambda d: d, lambda cents: Decimal(cents).scaleb(-2))


_EPOCH = date(1970, 1, 1).toordinal()


def parse_sale_for_wire(row: dict[str, str | None]) -> dict[str, Any] | Rejection:
    """`parse_sale`, but with the Avro encodings of the logical types already applied (days
    since 1970, unscaled two's-complement decimals): the producer's hot path, about twice as
    fast to encode, and the same bytes on the wire."""
    return _record(row, lambda d: d.toordinal() - _EPOCH,
                   lambda c: c.to_bytes((c.bit_length() + 8) // 8, "big", signed=True))


def _opt_date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text and text.strip() else None


def _opt(text: str | None) -> str | None:
    return text if text not in (None, "") else None


def parse_dimension(name: str, row: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """A dimension CSV row as (id, record); raises ValueError for a row that cannot be read."""
    if name == "customer":
        rec = {
            "customer_id": int(row["customer_id"]), "first_name": row["first_name"],
            "last_name": row["last_name"], "address": row["address"],
            "pincode": row["pincode"], "phone_number": row["phone_number"],
            "customer_joining_date": _opt_date(row.get("customer_joining_date")),
        }
        return rec["customer_id"], rec
    if name == "store":
        rec = {
            "id": int(row["id"]), "address": row["address"],
            "store_pincode": row["store_pincode"],
            "store_manager_name": row["store_manager_name"],
            "store_opening_date": _opt_date(row.get("store_opening_date")),
            "reviews": _opt(row.get("reviews")),
        }
        return rec["id"], rec
    if name == "product":
        old = _opt(row.get("old_price"))
        rec = {
            "id": int(row["id"]), "name": row["name"],
            "current_price": money(row["current_price"]),
            "old_price": money(old) if old else None,
            "created_date": _opt_date(row.get("created_date")),
            "updated_date": _opt_date(row.get("updated_date")),
            "expiry_date": _opt_date(row.get("expiry_date")),
        }
        return rec["id"], rec
    if name == "sales_team":
        manager = _opt(row.get("manager_id"))
        rec = {
            "id": int(row["id"]), "first_name": row["first_name"],
            "last_name": row["last_name"],
            "manager_id": int(manager) if manager else None,
            "is_manager": row["is_manager"], "address": row["address"],
            "pincode": row["pincode"], "joining_date": _opt_date(row.get("joining_date")),
        }
        return rec["id"], rec
    raise ValueError(f"unknown dimension {name!r}")
