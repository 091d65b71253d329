"""One sale as every stage handles it: typed, money in integer cents, exact.

The codec turns Avro records into `Sale`s and back; producers parse CSV rows into them; the
stream app validates and aggregates them; the rebuild folds them. Money is integer cents (exact,
cheap to add), dates are `datetime.date`. `digest()` fingerprints a sale's content: two copies
of a `sale_id` with equal digests are an exact replay, unequal ones a conflicting duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

FIELDS = ("sale_id", "customer_id", "store_id", "product_name", "sales_date",
          "sales_person_id", "price", "quantity", "total_cost")
EPOCH = date(1970, 1, 1).toordinal()


_DAYS: dict[int, date] = {}
_MONTHS: dict[date, str] = {}


def day(epoch_days: int) -> date:
    """An Avro `date` (days since 1970-01-01) as a date; cached: sales share few dates."""
    d = _DAYS.get(epoch_days)
    if d is None:
        d = date.fromordinal(EPOCH + epoch_days)
        if len(_DAYS) < 100_000:
            _DAYS[epoch_days] = d
    return d


def month_of(d: date) -> str:
    """`YYYY-MM` of a date: the month key of both marts (cached: a hot path)."""
    month = _MONTHS.get(d)
    if month is None:
        month = f"{d.year:04d}-{d.month:02d}"
        if len(_MONTHS) < 100_000:
            _MONTHS[d] = month
    return month


def money(cents: int) -> Decimal:
    """Integer cents as an exact 2-decimal amount."""
    return Decimal(cents).scaleb(-2)


def cents(amount: Decimal) -> int:
    """Exact integer cents of a Decimal amount at scale 2."""
    return int(amount.scaleb(2))


class Sale(NamedTuple):
    """A tuple: the stream app makes one per sale, and a tuple is the cheapest to make."""

    sale_id: str
    customer_id: int
    store_id: int
    product_name: str
    sales_date: date
    sales_person_id: int
    price_cents: int
    quantity: int
    total_cents: int

    @property
    def month(self) -> str:
        return month_of(self.sales_date)

    def replace(self, **changes: Any) -> Sale:
        return self._replace(**changes)

    def digest(self) -> bytes:
        """12 bytes that differ when any field differs."""
        text = (f"{self.sale_id}\x1f{self.customer_id}\x1f{self.store_id}\x1f"
                f"{self.product_name}\x1f{self.sales_date.toordinal()}\x1f"
                f"{self.sales_person_id}\x1f{self.price_cents}\x1f{self.quantity}\x1f"
                f"{self.total_cents}")
        return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Sale:
        """From a `Sale` record decoded with its logical types (date, Decimal)."""
        return cls(r["sale_id"], r["customer_id"], r["store_id"], r["product_name"],
                   r["sales_date"], r["sales_person_id"], cents(r["price"]), r["quantity"],
                   cents(r["total_cost"]))

    def to_record(self) -> dict[str, Any]:
        """As a `Sale` record with logical types, for the codec."""
        return {"sale_id": self.sale_id, "customer_id": self.customer_id,
                "store_id": self.store_id, "product_name": self.product_name,
                "sales_date": self.sales_date, "sales_person_id": self.sales_person_id,
                "price": money(self.price_cents), "quantity": self.quantity,
                "total_cost": money(self.total_cents)}


# --- the data contract's bounds: every accepted value fits the marts -------------------------

MAX_ID = 2_147_483_647
MAX_QUANTITY = 1_000_000
MAX_MONEY_CENTS = 9_999_999_999  # 99,999,999.99
MAX_TEXT = 255  # characters of a dimension text field (and of a sale_id or product name)


def bounds_violation(sale: Sale) -> str | None:
    """Why a sale's values cannot be held by the marts, or None.

    Lower bounds of quantity and money are not bounds but rules of their own
    (`non_positive_quantity`, `non_positive_price`), checked after this one.
    """
    for name in ("customer_id", "store_id", "sales_person_id"):
        value = getattr(sale, name)
        if not 1 <= value <= MAX_ID:
            return f"{name} {value} is outside 1..{MAX_ID}"
    if sale.quantity > MAX_QUANTITY:
        return f"quantity {sale.quantity} is above {MAX_QUANTITY:,}"
    for name, value in (("price", sale.price_cents), ("total_cost", sale.total_cents)):
        if value > MAX_MONEY_CENTS:
            return f"{name} {money(value)} is above {money(MAX_MONEY_CENTS):,}"
    for name in ("sale_id", "product_name"):
        if len(getattr(sale, name)) > MAX_TEXT:
            return f"{name} is longer than {MAX_TEXT} characters"
    return None


@dataclass(frozen=True, slots=True)
class ProductPrice:
    """A product's prices, for the list price a sale is compared with (anomalies.md)."""

    current_cents: int
    old_cents: int | None = None
    updated_date: date | None = None

    def list_cents(self, sales_date: date) -> int:
        """The old price for a sale before the price changed, else the current one."""
        if self.old_cents is not None and self.updated_date is not None and \
                sales_date < self.updated_date:
            return self.old_cents
        return self.current_cents
