"""`salesflow marts rebuild`: both marts and the anomaly flags from the full history of valid
sales.

Independent of the stream app's tables: it reads `<ns>.sales.valid` (every accepted sale,
once: `ValidSales` records, written in the stream app's transactions) and the dimension
topics, aggregates with the same pure metric math, and swaps the new rows in atomically. For
the same input it gives the streaming result.

At the speed of reading the topic: one consumer reads the valid sales and the dimension
topics; each message's sales are decoded in one batch to the five facts the marts need
(`Codec.decode_sale_facts`, no object per sale) and gathered in int64 arrays, which are folded
into one aggregate per (customer, month) and per (store, person, month) by sorting and
reducing whole columns (exact: where a sum could overflow int64, the plain Python `fold`
runs instead). The rows are then computed as values and bulk-loaded in one go
(`MartWriter.replace_all`: staging tables and one atomic swap on MySQL). Rows the database
refuses are quarantined, like a flush's.

The anomaly flags come from the same history with the flush's functions
(`mart_builder.anomalies`): the price flags from the list price each accepted sale carries,
the crowded days from the same fact arrays (distinct (customer, day, store) triples), the
spikes from the folded months. Rows that already existed keep their `first_flagged_at`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from itertools import chain
from typing import Any

import numpy as np

from mart_builder.anomalies import customer_anomalies, price_flags_of, store_anomalies
from mart_builder.builder import FlushResult
from mart_builder.changelogs import ChangelogReader
from mart_builder.metrics import (
    NO_CUSTOMER,
    MartRules,
    MonthValues,
    TeamValues,
    Values,
    customer_names,
    customer_values,
    person_name,
    store_values,
)
from mart_builder.model import Customer, SalesPerson
from mart_builder.schema import sales_anomalies
from mart_builder.writer import MartWriter
from salesflow.anomalies import AnomalyRules
from salesflow.codec import Codec, SaleFacts, codec_for, sale_facts
from salesflow.dead_letters import Rejection
from salesflow.dimensions import read_record
from salesflow.sale import EPOCH, month_of
from salesflow.settings import Settings
from salesflow.tables import PriceFlag
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

# customer -> its months, sorted: (month, total, count, max, first day, last day as ordinals)
CustomerMonths = dict[int, list[MonthValues]]
# store -> (person, month) -> (total, count, max)
StoreMonths = dict[int, dict[tuple[int, str], TeamValues]]
# customer -> day -> distinct stores, for the days with at least the rule's minimum
CrowdedDays = dict[int, dict[date, int]]


FACT_CHUNK = 100_000  # facts buffered as Python tuples before they become an array


class Fold:
    """Accepted sales of `<ns>.sales.valid` gathered as they are read (a handler of
    `ChangelogReader`, like the dimension topics': one consumer reads all), then folded into
    the two aggregates in one vectorised pass (`aggregate`)."""

    def __init__(self, codec: Codec, on_progress: Callable[[int], None] | None = None,
                 anomalies: AnomalyRules | None = None) -> None:
        self.codec = codec
        self.on_progress = on_progress
        self.anomalies = anomalies  # None: no flags gathered
        self.price_flags: list[PriceFlag] = []
        self.dimensions: dict[str, dict[bytes, dict[str, Any]]] = {}
        self._buffer: list[SaleFacts] = []
        self._chunks: list[np.ndarray] = []  # (n, 5) int64 arrays of facts
        self._plain: list[SaleFacts] | None = None  # facts that do not fit int64

    def valid_sales(self, _partition: int, _key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        for entry in self.codec.decode(value).record["messages"]:
            sales = self.codec.decode_sales(entry["message"]).sales
            accepted = entry["accepted"]
            if len(accepted) != len(sales):
                sales = [sales[i] for i in accepted]
            self.add(sale_facts(sales))
            if self.anomalies is not None:
                self.price_flags.extend(price_flags_of(
                    zip(sales, entry.get("list_price_cents") or (), strict=False),
                    self.anomalies))
            if self.on_progress:
                self.on_progress(len(sales))

    def add(self, facts: list[SaleFacts]) -> None:
        self._buffer.extend(facts)
        if len(self._buffer) >= FACT_CHUNK and self._plain is None:
            self._to_array()

    def _to_array(self) -> None:
        if not self._buffer or self._plain is not None:
            return
        try:
            flat = np.fromiter(chain.from_iterable(self._buffer), dtype=np.int64,
                               count=5 * len(self._buffer))
        except OverflowError:  # a value beyond int64 (an old release's data): exact Python
            self._plain = [*chain.from_iterable(map(tuple, c.tolist()) for c in self._chunks)]
            self._chunks = []
            return
        self._chunks.append(flat.reshape(-1, 5))
        self._buffer = []

    def aggregate(self) -> tuple[CustomerMonths, StoreMonths, CrowdedDays]:
        """Both aggregates, exact: int64 sums where they cannot overflow, else Python's; and
        the crowded days (none when the anomaly rules are off)."""
        at_least = self.anomalies.multi_store_min_stores if self.anomalies else None
        self._to_array()
        if self._plain is not None:
            facts_list = [*self._plain, *self._buffer]
            return (*fold(facts_list), crowded_days(facts_list, at_least) if at_least else {})
        facts = (np.concatenate(self._chunks) if self._chunks
                 else np.empty((0, 5), dtype=np.int64))
        self._chunks = []
        crowded = crowded_days_vectorised(facts, at_least) if at_least else {}
        if len(facts) and (int(np.abs(facts[:, 4]).max()) * len(facts) >= 2**62
                           or facts[:, :3].min() < 0 or facts[:, :3].max() >= 2**31):
            # an int64 sum could overflow, or ids do not fit the packed keys: no shortcut
            return (*fold(map(tuple, facts.tolist())), crowded)
        return (*fold_vectorised(facts), crowded)

    def dimension(self, name: str) -> Callable[[int, bytes | None, bytes | None], None]:
        latest = self.dimensions.setdefault(name, {})

        def handle(_partition: int, key: bytes | None, value: bytes | None) -> None:
            if key is None:
                return
            if value is None:
                latest.pop(key, None)
                return
            read = read_record(self.codec, name, key, value)
            if isinstance(read, Rejection):
                log.warning("%s record %r skipped: %s", name, key, read.message)
            else:
                latest[key] = read.record
        return handle


def fold(facts: Iterable[SaleFacts]) -> tuple[CustomerMonths, StoreMonths]:
    """The aggregates, one sale at a time (the reference `fold_vectorised` must equal)."""
    customers: dict[tuple[int, str], list[int]] = {}
    team: dict[tuple[int, int, str], list[int]] = {}
    for customer, store, person, day, total in facts:
        month = _month(day)
        c = customers.get((customer, month))
        if c is None:
            customers[(customer, month)] = [total, 1, total, day, day]
        else:
            c[0] += total
            c[1] += 1
            c[2] = max(c[2], total)
            c[3] = min(c[3], day)
            c[4] = max(c[4], day)
        t = team.get((store, person, month))
        if t is None:
            team[(store, person, month)] = [total, 1, total]
        else:
            t[0] += total
            t[1] += 1
            t[2] = max(t[2], total)
    by_customer: CustomerMonths = {}
    for (customer, month), (total, count, top, first, last) in sorted(customers.items()):
        by_customer.setdefault(customer, []).append(
            (month, total, count, top, first + EPOCH, last + EPOCH))
    by_store: StoreMonths = {}
    for (store, person, month), (total, count, top) in team.items():
        by_store.setdefault(store, {})[(person, month)] = (total, count, top)
    return by_customer, by_store


def fold_vectorised(facts: np.ndarray) -> tuple[CustomerMonths, StoreMonths]:
    """`fold` over an (n, 5) int64 array of facts, sorting and reducing whole columns (the
    caller guarantees that no sum overflows int64 and that ids fit 31 bits)."""
    if not len(facts):
        return {}, {}
    customer, store, person, day, total = (facts[:, i] for i in range(5))
    days, day_at = np.unique(day, return_inverse=True)
    month_of_day = np.array([_month_number(int(d)) for d in days], dtype=np.int64)
    month = month_of_day[day_at]
    numbers = np.unique(month)
    names = np.array([_month_text(int(m)) for m in numbers], dtype=object)

    def group(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, starts of each key's run in that order, the keys)"""
        order = np.argsort(key)
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        return order, starts, key[starts]

    def month_names(keys: np.ndarray) -> list[str]:
        return names[np.searchsorted(numbers, keys & (2**20 - 1))].tolist()

    # customers: one run per (customer, month), in key order: months sorted per customer
    order, starts, keys = group(customer * 2**20 + month)
    totals, days_in_order = total[order], day[order]
    rows = list(zip(month_names(keys), np.add.reduceat(totals, starts).tolist(),
                    np.diff(np.r_[starts, len(order)]).tolist(),
                    np.maximum.reduceat(totals, starts).tolist(),
                    (np.minimum.reduceat(days_in_order, starts) + EPOCH).tolist(),
                    (np.maximum.reduceat(days_in_order, starts) + EPOCH).tolist(),
                    strict=True))
    owners = keys >> 20
    bounds = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1], True]).tolist()
    by_customer: CustomerMonths = {
        owner: rows[a:b] for owner, a, b in zip(owners[bounds[:-1]].tolist(), bounds[:-1],
                                                  bounds[1:], strict=True)}
    # the team: one run per (store, person, month)
    pairs, pair_at = np.unique(store * 2**31 + person, return_inverse=True)
    order, starts, keys = group(pair_at.astype(np.int64) * 2**20 + month)
    totals = total[order]
    pair_list = pairs.tolist()
    by_store: StoreMonths = {}
    for pair_index, name, t, n, m in zip(
            (keys >> 20).tolist(), month_names(keys), np.add.reduceat(totals, starts).tolist(),
            np.diff(np.r_[starts, len(order)]).tolist(),
            np.maximum.reduceat(totals, starts).tolist(), strict=True):
        pair = pair_list[pair_index]
        by_store.setdefault(pair >> 31, {})[(pair & (2**31 - 1), name)] = (t, n, m)
    return by_customer, by_store


def crowded_days(facts: Iterable[SaleFacts], at_least: int) -> CrowdedDays:
    """The days a customer bought in `at_least` distinct stores, one sale at a time (the
    reference `crowded_days_vectorised` must equal)."""
    stores: dict[tuple[int, int], set[int]] = defaultdict(set)
    for customer, store, _person, day, _total in facts:
        stores[(customer, day)].add(store)
    out: CrowdedDays = {}
    for (customer, day), held in stores.items():
        if len(held) >= at_least:
            out.setdefault(customer, {})[date.fromordinal(EPOCH + day)] = len(held)
    return out


def crowded_days_vectorised(facts: np.ndarray, at_least: int) -> CrowdedDays:
    """`crowded_days` over an (n, 5) int64 array of facts: distinct (customer, day, store)
    rows, counted per (customer, day)."""
    if not len(facts):
        return {}
    triples = np.unique(facts[:, [0, 3, 1]], axis=0)  # sorted by customer, day, store
    pairs = triples[:, :2]
    starts = np.flatnonzero(np.r_[True, np.any(pairs[1:] != pairs[:-1], axis=1)])
    counts = np.diff(np.r_[starts, len(pairs)])
    crowded = counts >= at_least
    out: CrowdedDays = {}
    for (customer, day), n in zip(pairs[starts[crowded]].tolist(), counts[crowded].tolist(),
                                  strict=True):
        out.setdefault(customer, {})[date.fromordinal(EPOCH + day)] = n
    return out


_MONTHS: dict[int, str] = {}


def _month(day: int) -> str:
    """`YYYY-MM` of a day given in days since 1970 (cached: sales share few days)."""
    month = _MONTHS.get(day)
    if month is None:
        month = _MONTHS[day] = month_of(date.fromordinal(EPOCH + day))
    return month


def _month_number(day: int) -> int:
    d = date.fromordinal(EPOCH + day)
    return d.year * 12 + d.month - 1


def _month_text(number: int) -> str:
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


def read_history(settings: Settings, codec: Codec,
                 on_progress: Callable[[int], None] | None = None,
                 anomalies: AnomalyRules | None = None) -> Fold:
    """Every accepted sale folded, and the latest readable record of each dimension key."""
    fold = Fold(codec, on_progress, anomalies)
    topics = Topics(settings.namespace)
    reader = ChangelogReader(settings, {
        topics.valid_sales: fold.valid_sales,
        **{topic: fold.dimension(name) for name, topic in topics.dims.items()}})
    try:
        reader.catch_up()
    finally:
        reader.close()
    return fold


def mart_values(by_customer: CustomerMonths, by_store: StoreMonths,
                dims: dict[str, dict[bytes, dict[str, Any]]],
                rules: MartRules) -> tuple[Iterator[Values], Iterator[Values]]:
    """Every row of both marts, as values, from the folded aggregates; computed as they are
    consumed (the writer sends one statement while the next one's rows are computed)."""
    people = {r["id"]: person_name(SalesPerson.from_record(r))
              for r in dims.get("sales_team", {}).values()}
    names = {r["customer_id"]: customer_names(Customer.from_record(r))
             for r in dims.get("customer", {}).values()}
    as_of = (rules.as_of.toordinal() if rules.as_of is not None else
             max((max(m[5] for m in months) for months in by_customer.values()), default=0))

    def customer_rows() -> Iterator[Values]:
        for customer in sorted(by_customer):
            yield from customer_values(customer, by_customer[customer],
                                       names.get(customer, NO_CUSTOMER), rules, as_of)

    def team_rows() -> Iterator[Values]:
        for store in sorted(by_store):
            yield from store_values(store, by_store[store], people, rules)

    return customer_rows(), team_rows()


def anomaly_values(by_customer: CustomerMonths, by_store: StoreMonths, crowded: CrowdedDays,
                   flags: Iterable[PriceFlag], rules: AnomalyRules,
                   first_flagged: dict[tuple[str, str], datetime]) -> Iterator[Values]:
    """Every row of `sales_anomalies`, as values; a row the table already holds keeps its
    `first_flagged_at` (`first_flagged`: (rule, entity) -> it), a new one gets now."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    flags_of: dict[int, list[PriceFlag]] = defaultdict(list)
    for flag in flags:
        flags_of[flag.customer_id].append(flag)
    rows = [row for customer in sorted({*by_customer, *flags_of})
            for row in customer_anomalies(customer, by_customer.get(customer, []),
                                          crowded.get(customer, {}), flags_of[customer], rules)]
    rows += [row for store in sorted(by_store)
             for row in store_anomalies(store, by_store[store], rules)]
    for row in rows:
        yield row.values(first_flagged.get((row.rule, row.entity), now))


def rebuild(settings: Settings, writer: MartWriter,
            on_progress: Callable[[int], None] | None = None) -> FlushResult:
    started = time.perf_counter()
    rules = AnomalyRules.from_settings(settings) if settings.anomalies else None
    history = read_history(settings, codec_for(settings), on_progress, rules)
    dims = history.dimensions
    customers, team, crowded = history.aggregate()
    flags = history.price_flags
    del history
    customer_rows, team_rows = mart_values(customers, team, dims,
                                           MartRules.from_settings(settings))
    anomaly_rows: Iterable[Values] = ()
    if rules is not None:
        first_flagged = {(v[0], v[1]): v[-1] for v in writer.read_values(sales_anomalies.name)}
        anomaly_rows = anomaly_values(customers, team, crowded, flags, rules, first_flagged)
    writer.write([], [], {name: list(records.values()) for name, records in dims.items()})
    written = writer.replace_all(customer_rows, team_rows, anomaly_rows, isolate=True)
    return FlushResult(written.customers, written.team, sum(len(d) for d in dims.values()),
                       time.perf_counter() - started, written.anomalies,
                       refused=tuple(written.refused))
