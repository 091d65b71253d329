"""The aggregates the marts are computed from, and the dimension records they are joined with.

Money is integer cents everywhere in aggregates: exact, cheap to add, and trivially
serialisable into changelogs. Both the stream app (incrementally) and the rebuild (from the
full history) produce these; the metric math in `metrics.py` turns them into mart rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


def month_of(d: date) -> str:
    """`YYYY-MM` of a date: the month key of both marts."""
    return f"{d.year:04d}-{d.month:02d}"


@dataclass(frozen=True, slots=True)
class SaleFacts:
    """One valid sale reduced to what the marts need."""

    sale_id: str
    customer_id: int
    store_id: int
    sales_person_id: int
    sales_date: date
    total_cents: int


@dataclass(slots=True)
class CustomerMonth:
    """Running aggregate of one customer's valid sales in one month."""

    customer_id: int
    month: str
    total_cents: int = 0
    count: int = 0
    max_cents: int = 0
    first_date: date | None = None
    last_date: date | None = None

    def add(self, sale: SaleFacts) -> None:
        self.total_cents += sale.total_cents
        self.count += 1
        self.max_cents = (
            max(self.max_cents, sale.total_cents) if self.count > 1 else sale.total_cents)
        d = sale.sales_date
        self.first_date = d if self.first_date is None or d < self.first_date else self.first_date
        self.last_date = d if self.last_date is None or d > self.last_date else self.last_date

    def merge(self, other: CustomerMonth) -> None:
        """Combine two partial aggregates of the same key (e.g. from two source partitions)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.max_cents, self.first_date, self.last_date = (
                other.max_cents, other.first_date, other.last_date)
        else:
            self.max_cents = max(self.max_cents, other.max_cents)
            self.first_date = min(self.first_date, other.first_date)  # type: ignore[type-var]
            self.last_date = max(self.last_date, other.last_date)  # type: ignore[type-var]
        self.total_cents += other.total_cents
        self.count += other.count


@dataclass(slots=True)
class TeamMonth:
    """Running aggregate of one salesperson's valid sales in one store and month."""

    store_id: int
    sales_person_id: int
    month: str
    total_cents: int = 0
    count: int = 0
    max_cents: int = 0

    def add(self, sale: SaleFacts) -> None:
        self.total_cents += sale.total_cents
        self.count += 1
        self.max_cents = (
            max(self.max_cents, sale.total_cents) if self.count > 1 else sale.total_cents)

    def merge(self, other: TeamMonth) -> None:
        if other.count == 0:
            return
        self.max_cents = (
            other.max_cents if self.count == 0 else max(self.max_cents, other.max_cents))
        self.total_cents += other.total_cents
        self.count += other.count


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: int
    first_name: str
    last_name: str
    address: str
    pincode: str
    phone_number: str


@dataclass(frozen=True, slots=True)
class SalesPerson:
    sales_person_id: int
    first_name: str
    last_name: str
