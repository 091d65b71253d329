"""The metric math of both marts, as pure functions (see the spec's `metrics.md`).

Aggregates come in (integer cents, one or several partial aggregates per key), whole mart rows
come out: the mart builder, the rebuild and the tests all share this one implementation, so
they can never disagree. Every written value is computed exactly (integers and `Decimal`, never
float) and rounded once, half-up, to 2 decimals.

Two forms of the same rows: the builder's hot path works on *values*, plain tuples in column
order with money as integer cents (`customer_values`, `store_values`: cheap to build, hash and
compare, and what the writer renders); `customer_rows` / `team_rows` give the typed row objects
(`Decimal` money) built from those very tuples, for tests and readers.

Missing dimension records: a sale's customer or salesperson may be deleted from its dimension
after the sale was accepted. The row is still written (its money is real) with the dimension's
columns (`full_name`, `address`, `phone_number`) as NULL, and filled in by the next flush once
the record is back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from mart_builder.model import Customer, SalesPerson
from salesflow.sale import Sale, money, month_of
from salesflow.tables import CustomerMonth, TeamMonth

if TYPE_CHECKING:
    from salesflow.settings import Settings

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

CustomerKey = tuple[int, str]
TeamKey = tuple[int, int, str]
Values = tuple[Any, ...]
"""A mart row as values in column order: money in integer cents, the rest as written."""

# One customer-month, merged over partitions: (month, total, count, max, first day, last day),
# money in cents, days as `date.toordinal()`.
MonthValues = tuple[str, int, int, int, int, int]
# One (store, person, month), merged: (total, count, max).
TeamValues = tuple[int, int, int]


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


class _Row:
    """Conversion between a row object and its values (money: Decimal <-> integer cents)."""

    __slots__ = ()
    MONEY: ClassVar[frozenset[int]]

    @classmethod
    def from_values(cls, values: Values) -> Any:
        money_at = cls.MONEY
        return cls(*[money(v) if i in money_at and v is not None else v
                     for i, v in enumerate(values)])

    def values(self) -> Values:
        """The row as values (see `Values`)."""
        money_at = self.MONEY
        return tuple(int(v.scaleb(2)) if i in money_at and v is not None else v
                     for i, v in enumerate(getattr(self, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class CustomerMartRow(_Row):
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


@dataclass(frozen=True, slots=True)
class TeamMartRow(_Row):
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


def _money_columns(cls: type) -> frozenset[int]:
    return frozenset(i for i, f in enumerate(fields(cls)) if str(f.type).startswith("Decimal"))


CustomerMartRow.MONEY = _money_columns(CustomerMartRow)
TeamMartRow.MONEY = _money_columns(TeamMartRow)
CUSTOMER_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CustomerMartRow))
TEAM_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TeamMartRow))
CUSTOMER_KEY: tuple[str, ...] = CustomerMartRow.KEY
TEAM_KEY: tuple[str, ...] = TeamMartRow.KEY


# --- exact arithmetic -------------------------------------------------------------------------


def ratio_cents(num: int, den: int) -> int:
    """num / den in hundredths, rounded half-up (away from zero), in pure integer arithmetic.

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
    return q if num >= 0 else -q


def ratio(num: int, den: int) -> Decimal:
    """num / den rounded half-up (away from zero) to 2 decimals (see `ratio_cents`)."""
    return money(ratio_cents(num, den))


@lru_cache(maxsize=4096)
def previous_month(month: str) -> str:
    """`YYYY-MM` of the calendar month before `month` (2025-01 -> 2024-12); cached: hot path."""
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year - 1:04d}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"


@lru_cache(maxsize=64)
def _thresholds(rules: MartRules) -> tuple[Decimal, Decimal]:
    """The segment thresholds in cents (exact: compared with integer cents)."""
    return rules.premium_threshold.scaleb(2), rules.regular_threshold.scaleb(2)


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
    premium, regular = _thresholds(rules)
    if lifetime_cents >= premium:
        return "Premium"
    if lifetime_cents >= regular:
        return "Regular"
    return "Occasional"


CustomerNames = tuple[str | None, str | None, str | None]
NO_CUSTOMER: CustomerNames = (None, None, None)


def customer_names(person: Customer | None) -> CustomerNames:
    """(full_name, address, phone_number) of a customer record; NULLs when it is unknown."""
    if person is None:
        return NO_CUSTOMER
    return (f"{person.first_name} {person.last_name}", f"{person.address}, {person.pincode}",
            person.phone_number)


def customer_values(customer_id: int, months: Sequence[MonthValues], names: CustomerNames,
                    rules: MartRules, as_of: int) -> list[Values]:
    """Every row of one customer, as values, from all its months sorted by month.

    `as_of` is the as_of date as an ordinal (`date.toordinal()`). The lifetime columns are
    computed once and repeat on every row.
    """
    lifetime = sum(m[1] for m in months)
    frequency = sum(m[2] for m in months)
    top = max(m[3] for m in months)
    first = min(m[4] for m in months)
    last = max(m[5] for m in months)
    tail = (
        lifetime,
        months[0][0],
        months[-1][0],
        frequency,
        ratio_cents(lifetime, 100 * frequency),
        ratio_cents(lifetime, 100 * len(months)),
        top,
        None if frequency == 1 else ratio_cents(last - first, frequency - 1),
        as_of - last > rules.inactive_after_days,
        segment(lifetime, rules),
    )
    head = (customer_id, *names)
    return [(*head, m[0], m[1], *tail) for m in months]


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
    by_customer: dict[int, list[MonthValues]] = defaultdict(list)
    for key in sorted(merged):
        by_customer[key[0]].append(month_values(merged[key]))
    rows: list[CustomerMartRow] = []
    for customer_id, months in by_customer.items():
        names = customer_names(customers.get(customer_id))
        rows.extend(map(CustomerMartRow.from_values,
                        customer_values(customer_id, months, names, rules, today.toordinal())))
    return rows


def month_values(agg: CustomerMonth) -> MonthValues:
    assert agg.first_date is not None and agg.last_date is not None
    return (agg.month, agg.total_cents, agg.count, agg.max_cents, agg.first_date.toordinal(),
            agg.last_date.toordinal())


# --- sales_team_data_mart ---------------------------------------------------------------------


def _ranks(totals: list[int]) -> dict[int, int]:
    """SQL RANK() by total descending: total -> rank, ties share it and the next one skips."""
    ranks: dict[int, int] = {}
    for position, total in enumerate(sorted(totals, reverse=True), start=1):
        ranks.setdefault(total, position)
    return ranks


def store_values(store_id: int, months: Mapping[tuple[int, str], TeamValues],
                 names: Mapping[int, str | None], rules: MartRules) -> list[Values]:
    """Every row of one store, as values sorted by (person, month), from all its
    (person, month) aggregates: ranks and contributions compare the persons of a month, and
    growth, YTD and lifetime figures read a person's other months."""
    month_totals: dict[str, list[int]] = defaultdict(list)
    by_person: dict[int, list[tuple[str, int, int, int]]] = defaultdict(list)
    for (person, month), (total, count, largest) in sorted(months.items()):
        month_totals[month].append(total)
        by_person[person].append((month, total, count, largest))
    ranks = {m: _ranks(v) for m, v in month_totals.items()}
    store_totals = {m: sum(v) for m, v in month_totals.items()}
    rate = rules.incentive_rate

    rows: list[Values] = []
    for person_id, person_months in by_person.items():
        full_name = names.get(person_id)
        avg_per_month = ratio_cents(sum(m[1] for m in person_months), 100 * len(person_months))
        first_month, last_month = person_months[0][0], person_months[-1][0]
        totals = {m[0]: m[1] for m in person_months}
        ytd, ytd_year = 0, ""
        for month, total, count, largest in person_months:
            if month[:4] != ytd_year:
                ytd, ytd_year = 0, month[:4]
            ytd += total
            prev = totals.get(previous_month(month), 0)
            rank = ranks[month][total]
            incentive = (int((total * rate).quantize(Decimal(1), ROUND_HALF_UP))
                         if rank == 1 else 0)
            store_total = store_totals[month]
            rows.append((
                store_id, person_id, full_name, month, total, avg_per_month, incentive,
                ratio_cents(100 * (total - prev), prev) if prev else None,
                rank, ytd, total - prev, first_month, last_month, count,
                ratio_cents(total, 100 * count), largest,
                ratio_cents(100 * total, store_total) if store_total else None,
            ))
    return rows


def person_name(person: SalesPerson | None) -> str | None:
    return f"{person.first_name} {person.last_name}" if person else None


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
    by_store: dict[int, dict[tuple[int, str], TeamValues]] = defaultdict(dict)
    for (store, person, month), agg in merge_team_months(aggs).items():
        by_store[store][(person, month)] = (agg.total_cents, agg.count, agg.max_cents)
    names = {p: person_name(person) for p, person in people.items()}
    rows: list[TeamMartRow] = []
    for store in sorted(by_store):
        rows.extend(map(TeamMartRow.from_values,
                        store_values(store, by_store[store], names, rules)))
    return rows
