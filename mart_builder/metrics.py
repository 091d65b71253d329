"""The metric math of both marts, as pure functions (see the spec's `metrics.md`).

Aggregates come in (integer cents, one or several partial aggregates per key), whole mart rows
come out: the stream app, the rebuild and the tests all share this one implementation, so the
three can never disagree. Every written value is computed exactly (integers and `Decimal`, never
float) and rounded once, half-up, to 2 decimals.

Missing dimension records: a sale's customer or salesperson may be deleted from its dimension
after the sale was accepted. The row is still written (its money is real) with the dimension's
columns (`full_name`, `address`, `phone_number`) as NULL, and filled in by the next flush once
the record is back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from mart_builder.model import Customer, SalesPerson
from salesflow.sale import Sale, money, month_of
from salesflow.tables import CustomerMonth, TeamMonth

if TYPE_CHECKING:
    from salesflow.settings import Settings

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

CustomerKey = tuple[int, str]
TeamKey = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class MartRules:
    """The thresholds `metrics.md` calls configurable; defaults are the spec's."""

    inactive_after_days: int = 90
    premium_threshold: Decimal = Decimal("10000.00")
    regular_threshold: Decimal = Decimal("2000.00")
    incentive_rate: Decimal = Decimal("0.01")
    as_of: date | None = None

    def __post_init__(self) -> None:
        for name in ("premium_threshold", "regular_threshold", "incentive_rate"):
            if not isinstance(getattr(self, name), Decimal):
                raise TypeError(f"{name} must be a Decimal (exact money), not a float")
        if self.inactive_after_days < 0:
            raise ValueError("inactive_after_days must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> MartRules:
        return cls(
            inactive_after_days=settings.inactive_after_days,
            premium_threshold=settings.premium_threshold,
            regular_threshold=settings.regular_threshold,
            incentive_rate=settings.incentive_rate,
            as_of=settings.as_of,
        )

    def resolve_as_of(self, data_clock: date) -> date:
        """The configured as_of when set, else the data's own clock."""
        return self.as_of if self.as_of is not None else data_clock


@dataclass(frozen=True, slots=True)
class CustomerMartRow:
    """One row of `customers_data_mart`; fields are the columns, in the seed's order."""

    customer_id: int
    full_name: str | None
    address: str | None
    phone_number: str | None
    sales_date_month: str
    total_sales: Decimal
    customer_lifetime_value: Decimal
    first_purchase_month: str
    last_purchase_month: str
    purchase_frequency: int
    monetary_value: Decimal
    avg_monthly_spending: Decimal
    max_single_transaction: Decimal
    avg_time_between_purchases: Decimal | None
    inactive_status: bool
    customer_segment: str

    KEY: ClassVar[tuple[str, ...]] = ("customer_id", "sales_date_month")

    def as_dict(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in CUSTOMER_COLUMNS}


@dataclass(frozen=True, slots=True)
class TeamMartRow:
    """One row of `sales_team_data_mart`; fields are the columns, in the seed's order."""

    store_id: int
    sales_person_id: int
    full_name: str | None
    sales_month: str
    total_sales: Decimal
    avg_sales_per_month: Decimal
    incentive: Decimal
    sales_growth_rate: Decimal | None
    top_performance_rank: int
    year_to_date_sales: Decimal
    month_over_month_variance: Decimal
    first_sale_month: str
    last_sale_month: str
    total_transactions: int
    avg_transaction_value: Decimal
    max_single_transaction: Decimal
    sales_contribution_percentage: Decimal | None

    KEY: ClassVar[tuple[str, ...]] = ("store_id", "sales_person_id", "sales_month")

    def as_dict(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in TEAM_COLUMNS}


CUSTOMER_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CustomerMartRow))
TEAM_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TeamMartRow))
CUSTOMER_KEY: tuple[str, ...] = CustomerMartRow.KEY
TEAM_KEY: tuple[str, ...] = TeamMartRow.KEY


# --- exact arithmetic -------------------------------------------------------------------------


def ratio(num: int, den: int) -> Decimal:
    """num / den rounded half-up (away from zero) to 2 decimals, in pure integer arithmetic.

    Decimal division would first round to the context's precision, so a long repeating
    expansion could be rounded twice; integers make the single rounding exact.
    """
    if den == 0:
        raise ZeroDivisionError("ratio with a zero denominator")
    if den < 0:
        num, den = -num, -den
    q, r = divmod(abs(num) * 100, den)
    if 2 * r >= den:
        q += 1
    return Decimal(q if num >= 0 else -q).scaleb(-2)


@lru_cache(maxsize=4096)
def previous_month(month: str) -> str:
    """`YYYY-MM` of the calendar month before `month` (2025-01 -> 2024-12); cached: hot path."""
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year - 1:04d}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"


# --- aggregation ------------------------------------------------------------------------------


def aggregate(
    sales: Iterable[Sale],
) -> tuple[dict[CustomerKey, CustomerMonth], dict[TeamKey, TeamMonth]]:
    """Fold valid sales into per-(customer, month) and per-(store, person, month) aggregates."""
    customers: dict[CustomerKey, CustomerMonth] = {}
    team: dict[TeamKey, TeamMonth] = {}
    for sale in sales:
        month = month_of(sale.sales_date)
        ckey = (sale.customer_id, month)
        if (cagg := customers.get(ckey)) is None:
            cagg = customers[ckey] = CustomerMonth(sale.customer_id, month)
        cagg.add(sale)
        cagg.add_store(sale.sales_date, sale.store_id)
        tkey = (sale.store_id, sale.sales_person_id, month)
        if (tagg := team.get(tkey)) is None:
            tagg = team[tkey] = TeamMonth(sale.store_id, sale.sales_person_id, month)
        tagg.add(sale)
    return customers, team


def merge_customer_months(aggs: Iterable[CustomerMonth]) -> dict[CustomerKey, CustomerMonth]:
    """One aggregate per key (fresh objects: inputs are never mutated), empty ones dropped."""
    merged: dict[CustomerKey, CustomerMonth] = {}
    for agg in aggs:
        key = (agg.customer_id, agg.month)
        if (into := merged.get(key)) is None:
            into = merged[key] = CustomerMonth(agg.customer_id, agg.month)
        into.merge(agg)
    return {k: v for k, v in merged.items() if v.count > 0}


def merge_team_months(aggs: Iterable[TeamMonth]) -> dict[TeamKey, TeamMonth]:
    """One aggregate per key (fresh objects: inputs are never mutated), empty ones dropped."""
    merged: dict[TeamKey, TeamMonth] = {}
    for agg in aggs:
        key = (agg.store_id, agg.sales_person_id, agg.month)
        if (into := merged.get(key)) is None:
            into = merged[key] = TeamMonth(agg.store_id, agg.sales_person_id, agg.month)
        into.merge(agg)
    return {k: v for k, v in merged.items() if v.count > 0}


def data_as_of(aggs: Iterable[CustomerMonth]) -> date:
    """The data's own clock: the latest sale date among the aggregates (ValueError if none)."""
    latest = max((a.last_date for a in aggs if a.count > 0 and a.last_date), default=None)
    if latest is None:
        raise ValueError("no sales: the data has no as_of date")
    return latest


# --- customers_data_mart ----------------------------------------------------------------------


def segment(lifetime_cents: int, rules: MartRules) -> str:
    """Premium / Regular / Occasional by lifetime value; thresholds are inclusive."""
    value = money(lifetime_cents)
    if value >= rules.premium_threshold:
        return "Premium"
    if value >= rules.regular_threshold:
        return "Regular"
    return "Occasional"


def customer_rows(
    aggs: Iterable[CustomerMonth],
    customers: Mapping[int, Customer],
    rules: MartRules,
    as_of: date | None = None,
) -> list[CustomerMartRow]:
    """Whole `customers_data_mart` rows for every customer-month in `aggs`, sorted by key.

    Lifetime figures only see the months passed in, so pass every month of each customer
    whose rows are wanted. `as_of` is the data's clock (the latest sale over *all* valid
    sales, which a subset of customers may not contain); `rules.as_of` overrides it, and
    with neither the clock is taken from `aggs`.
    """
    merged = merge_customer_months(aggs)
    if not merged:
        return []
    today = rules.resolve_as_of(as_of if as_of is not None else data_as_of(merged.values()))

    by_customer: dict[int, list[CustomerMonth]] = defaultdict(list)
    for key in sorted(merged):
        by_customer[key[0]].append(merged[key])

    rows: list[CustomerMartRow] = []
    for customer_id, months in by_customer.items():
        lifetime = sum(m.total_cents for m in months)
        frequency = sum(m.count for m in months)
        first = min(m.first_date for m in months)  # type: ignore[type-var]
        last = max(m.last_date for m in months)  # type: ignore[type-var]
        gap = None if frequency == 1 else ratio((last - first).days, frequency - 1)
        person = customers.get(customer_id)
        shared = {
            "customer_id": customer_id,
            "full_name": f"{person.first_name} {person.last_name}" if person else None,
            "address": f"{person.address}, {person.pincode}" if person else None,
            "phone_number": person.phone_number if person else None,
            "customer_lifetime_value": money(lifetime),
            "first_purchase_month": months[0].month,
            "last_purchase_month": months[-1].month,
            "purchase_frequency": frequency,
            "monetary_value": ratio(lifetime, 100 * frequency),
            "avg_monthly_spending": ratio(lifetime, 100 * len(months)),
            "max_single_transaction": money(max(m.max_cents for m in months)),
            "avg_time_between_purchases": gap,
            "inactive_status": (today - last).days > rules.inactive_after_days,
            "customer_segment": segment(lifetime, rules),
        }
        rows.extend(
            CustomerMartRow(sales_date_month=m.month, total_sales=money(m.total_cents), **shared)
            for m in months
        )
    return rows


# --- sales_team_data_mart ---------------------------------------------------------------------


def _ranks(totals: list[int]) -> dict[int, int]:
    """SQL RANK() by total descending: total -> rank, ties share it and the next one skips."""
    ranks: dict[int, int] = {}
    for position, total in enumerate(sorted(totals, reverse=True), start=1):
        ranks.setdefault(total, position)
    return ranks


def team_rows(
    aggs: Iterable[TeamMonth],
    people: Mapping[int, SalesPerson],
    rules: MartRules,
) -> list[TeamMartRow]:
    """Whole `sales_team_data_mart` rows for every (store, person, month) in `aggs`, by key.

    Ranks and contribution compare a row with every salesperson of its store and month, and
    growth/YTD/lifetime figures read the person's other months, so pass all aggregates of
    each affected store (the rows of a store can't be computed from a slice of it).
    """
    merged = merge_team_months(aggs)

    store_month: dict[tuple[int, str], list[int]] = defaultdict(list)
    by_person: dict[tuple[int, int], list[TeamMonth]] = defaultdict(list)
    for key in sorted(merged):
        agg = merged[key]
        store_month[(agg.store_id, agg.month)].append(agg.total_cents)
        by_person[(agg.store_id, agg.sales_person_id)].append(agg)
    ranks = {k: _ranks(v) for k, v in store_month.items()}
    store_totals = {k: sum(v) for k, v in store_month.items()}

    rows: list[TeamMartRow] = []
    for (store_id, person_id), months in by_person.items():
        person = people.get(person_id)
        full_name = f"{person.first_name} {person.last_name}" if person else None
        avg_per_month = ratio(sum(m.total_cents for m in months), 100 * len(months))
        first_month, last_month = months[0].month, months[-1].month
        totals = {m.month: m.total_cents for m in months}
        ytd, ytd_year = 0, ""
        for m in months:
            if m.month[:4] != ytd_year:
                ytd, ytd_year = 0, m.month[:4]
            ytd += m.total_cents
            prev = totals.get(previous_month(m.month), 0)
            rank = ranks[(store_id, m.month)][m.total_cents]
            incentive = money(m.total_cents) * rules.incentive_rate if rank == 1 else ZERO
            store_total = store_totals[(store_id, m.month)]
            rows.append(
                TeamMartRow(
                    store_id=store_id,
                    sales_person_id=person_id,
                    full_name=full_name,
                    sales_month=m.month,
                    total_sales=money(m.total_cents),
                    avg_sales_per_month=avg_per_month,
                    incentive=incentive.quantize(CENT, ROUND_HALF_UP),
                    sales_growth_rate=ratio(100 * (m.total_cents - prev), prev) if prev else None,
                    top_performance_rank=rank,
                    year_to_date_sales=money(ytd),
                    month_over_month_variance=money(m.total_cents - prev),
                    first_sale_month=first_month,
                    last_sale_month=last_month,
                    total_transactions=m.count,
                    avg_transaction_value=ratio(m.total_cents, 100 * m.count),
                    max_single_transaction=money(m.max_cents),
                    sales_contribution_percentage=(
                        ratio(100 * m.total_cents, store_total) if store_total else None
                    ),
                )
            )
    return rows
