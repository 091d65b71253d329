"""The data contract's validation rules as plain functions over a decoded sale.

Each rule returns a `Rejection` or None; `validate` applies them in the contract's order and
the first failure names the reason. No Kafka here: the agent only routes what this decides.
`undecodable` is the codec's verdict and `conflicting_duplicate` needs the accepted-sales
state, so both are decided by the agent, around these rules.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from salesflow.dead_letters import Reason, Rejection

Sale = Mapping[str, Any]
TOLERANCE = Decimal("0.01")
EARLIEST = date(2000, 1, 1)
REFERENCE_REASONS = frozenset({Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_STORE,
                               Reason.UNKNOWN_SALES_PERSON, Reason.UNKNOWN_PRODUCT})
FIELDS = ("sale_id", "customer_id", "store_id", "product_name", "sales_date",
          "sales_person_id", "price", "quantity", "total_cost")


@dataclass(frozen=True, slots=True)
class Dimensions:
    """What the referential rules look ids up in (the stream app's global tables)."""

    customers: Container[int]
    stores: Container[int]
    sales_people: Container[int]
    products: Container[str]  # by name, exactly as written


def missing_field(sale: Sale) -> Rejection | None:
    absent = [f for f in FIELDS if sale.get(f) is None or
              (isinstance(sale[f], str) and not sale[f].strip())]
    if absent:
        return Rejection(Reason.MISSING_FIELD, f"empty or absent: {', '.join(absent)}")
    return None


def unparseable(sale: Sale) -> Rejection | None:
    """Typed Avro fields are parsed by the codec; what remains is money off the cent grid."""
    for name in ("price", "total_cost"):
        value = sale[name]
        if not isinstance(value, Decimal) or not value.is_finite() or \
                value != value.quantize(TOLERANCE):
            return Rejection(Reason.UNPARSEABLE, f"{name} {value!r} is not money")
    return None


def non_positive_quantity(sale: Sale) -> Rejection | None:
    if sale["quantity"] < 1:
        return Rejection(Reason.NON_POSITIVE_QUANTITY, f"quantity {sale['quantity']} < 1")
    return None


def non_positive_price(sale: Sale) -> Rejection | None:
    if sale["price"] <= 0:
        return Rejection(Reason.NON_POSITIVE_PRICE, f"price {sale['price']} <= 0")
    return None


def total_mismatch(sale: Sale) -> Rejection | None:
    expected = sale["price"] * sale["quantity"]
    if abs(expected - sale["total_cost"]) > TOLERANCE:
        return Rejection(Reason.TOTAL_MISMATCH,
                         f"total_cost {sale['total_cost']} != price × quantity {expected}")
    return None


def date_out_of_range(sale: Sale, today: date) -> Rejection | None:
    d = sale["sales_date"]
    if d > today + timedelta(days=1) or d < EARLIEST:
        return Rejection(Reason.DATE_OUT_OF_RANGE,
                         f"sales_date {d} outside {EARLIEST} .. {today + timedelta(days=1)}")
    return None


def unknown_reference(sale: Sale, dims: Dimensions) -> Rejection | None:
    """Referential checks, in the contract's order: customer, store, salesperson, product."""
    checks: tuple[tuple[Reason, str, Container], ...] = (
        (Reason.UNKNOWN_CUSTOMER, "customer_id", dims.customers),
        (Reason.UNKNOWN_STORE, "store_id", dims.stores),
        (Reason.UNKNOWN_SALES_PERSON, "sales_person_id", dims.sales_people),
        (Reason.UNKNOWN_PRODUCT, "product_name", dims.products),
    )
    for reason, field, known in checks:
        if sale[field] not in known:
            return Rejection(reason, f"{field} {sale[field]!r} is not in the dimension")
    return None


CONTENT_RULES: tuple[Callable[[Sale], Rejection | None], ...] = (
    missing_field, unparseable, non_positive_quantity, non_positive_price, total_mismatch)


def validate(sale: Sale, dims: Dimensions, today: date) -> Rejection | None:
    """The first rule the sale breaks, or None when it may be accepted."""
    for rule in CONTENT_RULES:
        if (rejection := rule(sale)) is not None:
            return rejection
    return date_out_of_range(sale, today) or unknown_reference(sale, dims)
