"""`salesflow marts rebuild`: both marts from the full history of valid sales.

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from itertools import chain
from typing import Any

import numpy as np

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
from mart_builder.writer import MartWriter
from salesflow.codec import Codec, SaleFacts, codec_for
from salesflow.dead_letters import Rejection
from salesflow.dimensions import read_record
from salesflow.sale import EPOCH, month_of
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

# customer -> its months, sorted: (month, total, count, max, first day, last day as ordinals)
CustomerMonths = dict[int, list[MonthValues]]
# store -> (person, month) -> (total, count, max)
StoreMonths = dict[int, dict[tuple[int, str], TeamValues]]


FACT_CHUNK = 100_000  # facts buffered as Python tuples before they become an array


class Fold:
    """Accepted sales of `<ns>.sales.valid` gathered as they are read (a handler of
    `ChangelogReader`, like the dimension topics': one consumer reads all), then folded into
    the two aggregates in one vectorised pass (`aggregate`)."""

    def __init__(self, codec: Codec, on_progress: Callable[[int], None] | None = None) -> None:
        self.codec = codec
        self.on_progress = on_progress
        self.dimensions: dict[str, dict[bytes, dict[str, Any]]] = {}
        self._buffer: list[SaleFacts] = []
        self._chunks: list[np.ndarray] = []  # (n, 5) int64 arrays of facts
        self._plain: list[SaleFacts] | None = None  # facts that do not fit int64

    def valid_sales(self, _partition: int, _key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        for entry in self.codec.decode(value).record["messages"]:
            facts = self.codec.decode_sale_facts(entry["message"])
            accepted = entry["accepted"]
            if len(accepted) != len(facts):
                facts = [facts[i] for i in accepted]
            self.add(facts)
            if self.on_progress:
                self.on_progress(len(facts))

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

    def aggregate(self) -> tuple[CustomerMonths, StoreMonths]:
        """Both aggregates, exact: int64 sums where they cannot overflow, else Python's."""
        self._to_array()
        if self._plain is not None:
            return fold(chain(self._plain, self._buffer))
        facts = (np.concatenate(self._chunks) if self._chunks
                 else np.empty((0, 5), dtype=np.int64))
        self._chunks = []
        if len(facts) and (int(np.abs(facts[:, 4]).max()) * len(facts) >= 2**62
                           or facts[:, :3].min() < 0 or facts[:, :3].max() >= 2**31):
            # an int64 sum could overflow, or ids do not fit the packed keys: no shortcut
            return fold(map(tuple, facts.tolist()))
        return fold_vectorised(facts)

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
                 on_progress: Callable[[int], None] | None = None) -> Fold:
    """Every accepted sale folded, and the latest readable record of each dimension key."""
    fold = Fold(codec, on_progress)
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


def rebuild(settings: Settings, writer: MartWriter,
            on_progress: Callable[[int], None] | None = None) -> FlushResult:
    started = time.perf_counter()
    history = read_history(settings, codec_for(settings), on_progress)
    dims = history.dimensions
    customers, team = history.aggregate()
    del history
    customer_rows, team_rows = mart_values(customers, team, dims,
                                           MartRules.from_settings(settings))
    writer.write([], [], {name: list(records.values()) for name, records in dims.items()})
    written = writer.replace_all(customer_rows, team_rows, isolate=True)
    return FlushResult(written.customers, written.team, sum(len(d) for d in dims.values()),
                       time.perf_counter() - started, refused=tuple(written.refused))
