"""`salesflow marts rebuild`: both marts from the full history of valid sales.

Independent of the stream app's tables: it reads `<ns>.sales.valid` (every accepted sale,
once: `ValidSales` records, written in the stream app's transactions) and the dimension
topics, aggregates with the same pure metric math, and swaps the new rows in atomically. For
the same input it gives the streaming result.

At the speed of reading the topic: each message's sales are decoded in one batch to the five
facts the marts need (`Codec.decode_sale_facts`, no object per sale) and folded in place into
one list per (customer, month) and per (store, person, month); the rows are then computed as
values and bulk-loaded in one go (`MartWriter.replace_all`: staging tables and one atomic
swap on MySQL). Rows the database refuses are quarantined, like a flush's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from mart_builder.builder import FlushResult
from mart_builder.metrics import (
    MartRules,
    Values,
    customer_names,
    customer_values,
    person_name,
    store_values,
)
from mart_builder.model import Customer, SalesPerson
from mart_builder.writer import MartWriter
from salesflow.codec import Codec, codec_for
from salesflow.dead_letters import Rejection
from salesflow.dimensions import read_record
from salesflow.kafka import read_all
from salesflow.sale import EPOCH, month_of
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

# (customer_id, month) -> [total, count, max, first day, last day] (days since 1970)
CustomerSums = dict[tuple[int, str], list[int]]
# (store_id, sales_person_id, month) -> [total, count, max]
TeamSums = dict[tuple[int, int, str], list[int]]


def read_dimensions(settings: Settings, codec: Codec) -> dict[str, dict[bytes, dict[str, Any]]]:
    """The latest readable record per key of each dimension topic."""
    out: dict[str, dict[bytes, dict[str, Any]]] = {}
    for name, topic in Topics(settings.namespace).dims.items():
        latest: dict[bytes, dict[str, Any]] = {}
        for msg in read_all(settings, topic):
            if msg.value() is None:
                latest.pop(msg.key(), None)
                continue
            read = read_record(codec, name, msg.key(), msg.value())
            if isinstance(read, Rejection):
                log.warning("%s record %r skipped: %s", name, msg.key(), read.message)
            else:
                latest[msg.key()] = read.record
        out[name] = latest
    return out


def fold_valid_sales(settings: Settings, codec: Codec,
                     on_progress: Callable[[int], None] | None = None,
                     ) -> tuple[CustomerSums, TeamSums]:
    """Every accepted sale of `<ns>.sales.valid`, folded into the two aggregates."""
    customers: CustomerSums = {}
    team: TeamSums = {}
    months: dict[int, str] = {}  # day -> its month: sales share few days
    decode, facts_of = codec.decode, codec.decode_sale_facts
    for msg in read_all(settings, Topics(settings.namespace).valid_sales):
        record = decode(msg.value()).record
        facts = facts_of(record["message"])
        accepted = record["accepted"]
        if len(accepted) != len(facts):
            facts = [facts[i] for i in accepted]
        for customer, store, person, day, total in facts:
            month = months.get(day)
            if month is None:
                month = months[day] = month_of(date.fromordinal(EPOCH + day))
            c = customers.get((customer, month))
            if c is None:
                customers[(customer, month)] = [total, 1, total, day, day]
            else:
                c[0] += total
                c[1] += 1
                if total > c[2]:
                    c[2] = total
                if day < c[3]:
                    c[3] = day
                elif day > c[4]:
                    c[4] = day
            t = team.get((store, person, month))
            if t is None:
                team[(store, person, month)] = [total, 1, total]
            else:
                t[0] += total
                t[1] += 1
                if total > t[2]:
                    t[2] = total
        if on_progress:
            on_progress(len(facts))
    return customers, team


def mart_values(customers: CustomerSums, team: TeamSums,
                dims: dict[str, dict[bytes, dict[str, Any]]],
                rules: MartRules) -> tuple[list[Values], list[Values]]:
    """Every row of both marts, as values, from the folded aggregates."""
    people = {r["id"]: person_name(SalesPerson.from_record(r))
              for r in dims.get("sales_team", {}).values()}
    names = {r["customer_id"]: customer_names(Customer.from_record(r))
             for r in dims.get("customer", {}).values()}
    customer_out: list[Values] = []
    if customers:
        as_of = (rules.as_of.toordinal() if rules.as_of is not None
                 else EPOCH + max(c[4] for c in customers.values()))
        by_customer: dict[int, list] = {}
        for (customer, month), (total, count, top, first, last) in customers.items():
            by_customer.setdefault(customer, []).append(
                (month, total, count, top, first + EPOCH, last + EPOCH))
        for customer in sorted(by_customer):
            months = sorted(by_customer[customer])
            customer_out.extend(customer_values(customer, months, names.get(customer) or
                                                (None, None, None), rules, as_of))
    by_store: dict[int, dict[tuple[int, str], tuple[int, int, int]]] = {}
    for (store, person, month), (total, count, top) in team.items():
        by_store.setdefault(store, {})[(person, month)] = (total, count, top)
    team_out: list[Values] = []
    for store in sorted(by_store):
        team_out.extend(store_values(store, by_store[store], people, rules))
    return customer_out, team_out


def rebuild(settings: Settings, writer: MartWriter,
            on_progress: Callable[[int], None] | None = None) -> FlushResult:
    started = time.perf_counter()
    codec = codec_for(settings)
    customers, team = fold_valid_sales(settings, codec, on_progress)
    dims = read_dimensions(settings, codec)
    customer_rows, team_rows = mart_values(customers, team, dims,
                                           MartRules.from_settings(settings))
    del customers, team
    writer.write([], [], {name: list(records.values()) for name, records in dims.items()})
    written = writer.replace_all(customer_rows, team_rows, isolate=True)
    return FlushResult(len(customer_rows), len(team_rows), sum(len(d) for d in dims.values()),
                       time.perf_counter() - started, refused=tuple(written.refused))
