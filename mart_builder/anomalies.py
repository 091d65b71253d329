"""The rows of `sales_anomalies` (docs/spec/anomalies.md), as pure functions of the aggregates.

Rows are computed per *owner*, like the marts' rows: everything one customer's aggregates
flag (its off-list sales, crowded days and spending spikes), and everything one store's flag
(its salespeople's spikes). The streaming flush calls them for the owners that changed, over
the merged partials of the stream app's changelogs; the rebuild for every owner, over the
valid-sales history; both with the same month values as the marts (`metrics.MonthValues`,
`metrics.TeamValues`), so both paths flag the same rows. Observed and expected are rounded
half-up to the cent once, after the rules compared exact values (`salesflow.anomalies`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import ClassVar

from mart_builder.metrics import MonthValues, TeamValues, month_values, ratio
from salesflow.anomalies import (
    CUSTOMER_SPEND_SPIKE,
    MULTI_STORE_DAY,
    PRICE_OFF_LIST,
    SALESPERSON_SPIKE,
    AnomalyRules,
)
from salesflow.sale import money
from salesflow.tables import CustomerMonth, PriceFlag, TeamMonth

Owner = tuple[str, int]  # ("c", customer_id) or ("s", store_id): whose rows they are


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

    def values(self, flagged_at: datetime) -> tuple:
        """The row as the writer takes it: the table's columns in order, money in cents,
        `first_flagged_at` last (used only when the row is new)."""
        return (self.rule, self.entity, self.customer_id, self.store_id, self.sales_person_id,
                self.sale_id, self.period, int(self.observed.scaleb(2)),
                int(self.expected.scaleb(2)), flagged_at)


ANOMALY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AnomalyRow))
FIRST_FLAGGED_AT = len(ANOMALY_COLUMNS)  # its position in the table's values


def owner_of(values: Sequence) -> Owner:
    """Whose row it is: a salesperson's spike belongs to its store, the rest to a customer."""
    return ("s", values[3]) if values[0] == SALESPERSON_SPIKE else ("c", values[2])


def _money(value: Fraction) -> Decimal:
    """An exact amount in cents as money, rounded half-up to the cent."""
    return ratio(value.numerator, value.denominator * 100)


def _count(n: int) -> Decimal:
    return Decimal(n).quantize(Decimal("0.01"))


def customer_anomalies(customer: int, months: Sequence[MonthValues],
                       stores_on: Mapping[date, int], flags: Iterable[PriceFlag],
                       rules: AnomalyRules) -> list[AnomalyRow]:
    """Every flag of one customer: its sales off their list price (`flags`, as the stream
    decided them; the threshold is checked again, so a changed setting applies to the flags
    already kept), its days in many stores (`stores_on`: day -> distinct stores; days with
    fewer may be left out) and its spending spikes (`months`: all its months with sales)."""
    rows = [AnomalyRow(PRICE_OFF_LIST, f"sale:{f.sale_id}", f.customer_id, f.store_id,
                       f.sales_person_id, f.sale_id, f.sales_date.isoformat(),
                       money(f.price_cents), money(f.list_cents))
            for f in flags if rules.price_off_list(f.price_cents, f.list_cents)]
    for day, stores in stores_on.items():
        if rules.multi_store_day(stores):
            rows.append(AnomalyRow(MULTI_STORE_DAY, f"customer:{customer}:{day.isoformat()}",
                                   customer, None, None, None, day.isoformat(), _count(stores),
                                   _count(rules.multi_store_min_stores)))
    if len(months) > rules.spend_spike_min_months:
        total, others = sum(m[1] for m in months), len(months) - 1
        for month, cents, *_ in months:
            mean = rules.spend_spike_of(cents, total - cents, others)
            if mean is not None:
                rows.append(AnomalyRow(CUSTOMER_SPEND_SPIKE, f"customer:{customer}:{month}",
                                       customer, None, None, None, month, money(cents),
                                       _money(mean)))
    return rows


def store_anomalies(store: int, months: Mapping[tuple[int, str], TeamValues],
                    rules: AnomalyRules) -> list[AnomalyRow]:
    """Every `salesperson_spike` of one store (`months`: (person, month) -> its values)."""
    by_person: dict[int, dict[str, int]] = defaultdict(dict)
    for (person, month), (total, count, _top) in months.items():
        if count:
            by_person[person][month] = total
    rows = []
    for person, totals in by_person.items():
        if len(totals) <= rules.salesperson_spike_months:
            continue
        for month, total in totals.items():
            mean = rules.salesperson_spike(month, totals)
            if mean is not None:
                rows.append(AnomalyRow(SALESPERSON_SPIKE, f"team:{store}:{person}:{month}", None,
                                       store, person, None, month, money(total), _money(mean)))
    return rows


def anomaly_rows(customers: Iterable[CustomerMonth], team: Iterable[TeamMonth],
                 flags: Iterable[PriceFlag], rules: AnomalyRules) -> list[AnomalyRow]:
    """Every row of whole aggregates (one per key, as `metrics.aggregate` folds them),
    sorted by the table's key: the reference the other paths are tested against."""
    months: dict[int, list[MonthValues]] = defaultdict(list)
    stores_on: dict[int, dict[date, int]] = defaultdict(dict)
    for month in customers:
        if month.count:
            months[month.customer_id].append(month_values(month))
            stores_on[month.customer_id].update(
                (day, len(stores)) for day, stores in month.days().items())
    by_customer: dict[int, list[PriceFlag]] = defaultdict(list)
    for flag in flags:
        by_customer[flag.customer_id].append(flag)
    by_store: dict[int, dict[tuple[int, str], TeamValues]] = defaultdict(dict)
    for t in team:
        by_store[t.store_id][(t.sales_person_id, t.month)] = (t.total_cents, t.count,
                                                              t.max_cents)
    rows = [row for customer in {*months, *by_customer}
            for row in customer_anomalies(customer, sorted(months[customer]),
                                          stores_on[customer], by_customer[customer], rules)]
    rows += [row for store, held in by_store.items()
             for row in store_anomalies(store, held, rules)]
    return sorted(rows, key=lambda r: (r.rule, r.entity))


def price_flags_of(sales_with_lists: Iterable[tuple], rules: AnomalyRules) -> Iterator[PriceFlag]:
    """The price flags of (Sale, list price) pairs: what the stream kept, for the rebuild."""
    for s, listed in sales_with_lists:
        if listed != s.price_cents and rules.price_off_list(s.price_cents, listed):
            yield PriceFlag(s.sale_id, s.customer_id, s.store_id, s.sales_person_id,
                            s.sales_date, s.price_cents, listed)
