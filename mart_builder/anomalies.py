"""The rows of `sales_anomalies` (docs/spec/anomalies.md), as pure functions of the aggregates.

The same functions serve the streaming flush (over the stream app's partial aggregates and
its `price_flags`) and the rebuild (over the valid-sales history), so both flag the same rows.
Observed and expected are rounded half-up to 2 decimals once, after the rules compared exact
values (`salesflow.anomalies`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal
from fractions import Fraction
from typing import ClassVar

from mart_builder.metrics import ratio
from salesflow.anomalies import (
    CUSTOMER_SPEND_SPIKE,
    MULTI_STORE_DAY,
    PRICE_OFF_LIST,
    SALESPERSON_SPIKE,
    AnomalyRules,
)
from salesflow.sale import money
from salesflow.tables import CustomerMonth, PriceFlag, TeamMonth


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    """One row of `sales_anomalies` (without `first_flagged_at`, which the writer keeps)."""

    rule: str
    entity: str
    customer_id: int | None
    store_id: int | None
    sales_person_id: int | None
    sale_id: str | None
    period: str
    observed: Decimal
    expected: Decimal

    KEY: ClassVar[tuple[str, ...]] = ("rule", "entity")

    def as_dict(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in ANOMALY_COLUMNS}


ANOMALY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AnomalyRow))


def _money(value: Fraction) -> Decimal:
    """An exact amount in cents as money, rounded half-up to the cent."""
    return ratio(value.numerator, value.denominator * 100)


def price_rows(flags: Iterable[PriceFlag], rules: AnomalyRules) -> list[AnomalyRow]:
    """A row per sale off its list price (the stream decided; the threshold is checked again,
    so a changed setting applies to the flags already kept)."""
    return [AnomalyRow(PRICE_OFF_LIST, f"sale:{f.sale_id}", f.customer_id, f.store_id,
                       f.sales_person_id, f.sale_id, f.sales_date.isoformat(),
                       money(f.price_cents), money(f.list_cents))
            for f in flags if rules.price_off_list(f.price_cents, f.list_cents)]


def customer_rows(months: Iterable[CustomerMonth], rules: AnomalyRules) -> list[AnomalyRow]:
    """`multi_store_day` and `customer_spend_spike` of the customers whose months (merged over
    partitions, all of each customer's months) are given."""
    by_customer: dict[int, list[CustomerMonth]] = defaultdict(list)
    for month in months:
        if month.count:
            by_customer[month.customer_id].append(month)
    rows = []
    for customer, own in by_customer.items():
        for month in own:
            for day, stores in month.days().items():
                if rules.multi_store_day(len(stores)):
                    rows.append(AnomalyRow(
                        MULTI_STORE_DAY, f"customer:{customer}:{day.isoformat()}", customer,
                        None, None, None, day.isoformat(), Decimal(len(stores)).quantize(
                            Decimal("0.01")),
                        Decimal(rules.multi_store_min_stores).quantize(Decimal("0.01"))))
            others = [m.total_cents for m in own if m.month != month.month]
            mean = rules.customer_spend_spike(month.total_cents, others)
            if mean is not None:
                rows.append(AnomalyRow(
                    CUSTOMER_SPEND_SPIKE, f"customer:{customer}:{month.month}", customer, None,
                    None, None, month.month, money(month.total_cents), _money(mean)))
    return rows


def team_rows(months: Iterable[TeamMonth], rules: AnomalyRules) -> list[AnomalyRow]:
    """`salesperson_spike` of the (store, salesperson) pairs whose months are given (merged
    over partitions)."""
    by_pair: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for month in months:
        if month.count:
            by_pair[(month.store_id, month.sales_person_id)][month.month] = month.total_cents
    rows = []
    for (store, person), totals in by_pair.items():
        for month, total in totals.items():
            mean = rules.salesperson_spike(month, totals)
            if mean is not None:
                rows.append(AnomalyRow(
                    SALESPERSON_SPIKE, f"team:{store}:{person}:{month}", None, store, person,
                    None, month, money(total), _money(mean)))
    return rows


def anomaly_rows(customers: Iterable[CustomerMonth], team: Iterable[TeamMonth],
                 flags: Iterable[PriceFlag], rules: AnomalyRules) -> list[AnomalyRow]:
    """Every row of the given aggregates, sorted by the table's key."""
    rows = [*price_rows(flags, rules), *customer_rows(customers, rules),
            *team_rows(team, rules)]
    return sorted(rows, key=lambda r: (r.rule, r.entity))


def price_flags_of(sales_with_lists: Iterable[tuple], rules: AnomalyRules) -> list[PriceFlag]:
    """The price flags of (Sale, list price) pairs: what the stream kept, for the rebuild."""
    return [PriceFlag(s.sale_id, s.customer_id, s.store_id, s.sales_person_id, s.sales_date,
                      s.price_cents, listed)
            for s, listed in sales_with_lists if rules.price_off_list(s.price_cents, listed)]

