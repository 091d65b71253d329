"""The data contract's validation rules as plain functions over a decoded `Sale`.

Each rule returns a `Rejection` or None; `validate` applies them in the contract's order and
the first failure names the reason. No Kafka here: the worker only routes what this decides.
`undecodable` is the codec's verdict and `conflicting_duplicate` needs the accepted-sales
state, so both are decided by the processor, around these rules. `unparseable` cannot happen
on the wire (Avro fields are typed and money has two decimals by its schema): producers
catch it in text.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from salesflow.dead_letters import Reason, Rejection
from salesflow.sale import (
    MAX_ID,
    MAX_MONEY_CENTS,
    MAX_QUANTITY,
    MAX_TEXT,
    ProductPrice,
    Sale,
    bounds_violation,
    money,
)

EARLIEST = date(2000, 1, 1)
REFERENCE_REASONS = frozenset({Reason.UNKNOWN_CUSTOMER, Reason.UNKNOWN_STORE,
                               Reason.UNKNOWN_SALES_PERSON, Reason.UNKNOWN_PRODUCT})


class Dimensions(Protocol):
    """What the referential rules look ids up in (the worker's `DimensionCache`)."""

    @property
    def customers(self) -> Container[int]: ...
    @property
    def stores(self) -> Container[int]: ...
    @property
    def sales_people(self) -> Container[int]: ...
    @property
    def products(self) -> Mapping[str, ProductPrice]: ...  # by name, exactly as written


@dataclass(frozen=True, slots=True)
class StaticDimensions:
    """Fixed `Dimensions`, for tests and tools."""

    customers: Container[int]
    stores: Container[int]
    sales_people: Container[int]
    products: Mapping[str, ProductPrice]


def missing_field(sale: Sale) -> Rejection | None:
    absent = [name for name in ("sale_id", "product_name")
              if not getattr(sale, name).strip()]
    if absent:
        return Rejection(Reason.MISSING_FIELD, f"empty or absent: {', '.join(absent)}")
    return None


def out_of_bounds(sale: Sale) -> Rejection | None:
    problem = bounds_violation(sale)
    return Rejection(Reason.OUT_OF_BOUNDS, problem) if problem else None


def non_positive_quantity(sale: Sale) -> Rejection | None:
    if sale.quantity < 1:
        return Rejection(Reason.NON_POSITIVE_QUANTITY, f"quantity {sale.quantity} < 1")
    return None


def non_positive_price(sale: Sale) -> Rejection | None:
    if sale.price_cents <= 0:
        return Rejection(Reason.NON_POSITIVE_PRICE, f"price {money(sale.price_cents)} <= 0")
    return None


def total_mismatch(sale: Sale) -> Rejection | None:
    expected = sale.price_cents * sale.quantity
    if abs(expected - sale.total_cents) > 1:
        return Rejection(Reason.TOTAL_MISMATCH, f"total_cost {money(sale.total_cents)} != "
                         f"price × quantity {money(expected)}")
    return None


def date_out_of_range(sale: Sale, today: date) -> Rejection | None:
    d = sale.sales_date
    if d > today + timedelta(days=1) or d < EARLIEST:
        return Rejection(Reason.DATE_OUT_OF_RANGE,
                         f"sales_date {d} outside {EARLIEST} .. {today + timedelta(days=1)}")
    return None


def unknown_reference(sale: Sale, dims: Dimensions) -> Rejection | None:
    """Referential checks, in the contract's order: customer, store, salesperson, product."""
    if sale.customer_id not in dims.customers:
        return Rejection(Reason.UNKNOWN_CUSTOMER,
                         f"customer_id {sale.customer_id} is not in the dimension")
    if sale.store_id not in dims.stores:
        return Rejection(Reason.UNKNOWN_STORE, f"store_id {sale.store_id} is not in the dimension")
    if sale.sales_person_id not in dims.sales_people:
        return Rejection(Reason.UNKNOWN_SALES_PERSON,
                         f"sales_person_id {sale.sales_person_id} is not in the dimension")
    if sale.product_name not in dims.products:
        return Rejection(Reason.UNKNOWN_PRODUCT,
                         f"product_name {sale.product_name!r} is not in the dimension")
    return None


CONTENT_RULES: tuple[Callable[[Sale], Rejection | None], ...] = (
    missing_field, out_of_bounds, non_positive_quantity, non_positive_price, total_mismatch)


def validate(sale: Sale, dims: Dimensions, today: date) -> Rejection | None:
    """The first rule the sale breaks, or None when it may be accepted."""
    for rule in CONTENT_RULES:
        if (rejection := rule(sale)) is not None:
            return rejection
    return date_out_of_range(sale, today) or unknown_reference(sale, dims)


class Rules:
    """`validate` for one day, with a fast path for the common case.

    Nearly every sale breaks no content rule; checking that in one expression costs a
    fraction of running each rule, which only runs (in order, for the reason) when the
    expression is false. `tests/unit/stream_app/test_validation.py` holds both to the same
    verdicts.
    """

    def __init__(self, dims: Dimensions, today: date) -> None:
        self.dims = dims
        self.today = today
        self._latest = today + timedelta(days=1)

    def check(self, sale: Sale) -> Rejection | None:
        sale_id, name = sale.sale_id, sale.product_name
        if (sale_id and name and not sale_id.isspace() and not name.isspace()
                and len(sale_id) <= MAX_TEXT and len(name) <= MAX_TEXT
                and 1 <= sale.customer_id <= MAX_ID and 1 <= sale.store_id <= MAX_ID
                and 1 <= sale.sales_person_id <= MAX_ID
                and 1 <= sale.quantity <= MAX_QUANTITY
                and 0 < sale.price_cents <= MAX_MONEY_CENTS
                and sale.total_cents <= MAX_MONEY_CENTS
                and -1 <= sale.price_cents * sale.quantity - sale.total_cents <= 1
                and EARLIEST <= sale.sales_date <= self._latest):
            return unknown_reference(sale, self.dims)
        return validate(sale, self.dims, self.today)
