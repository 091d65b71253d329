"""`salesflow marts rebuild`: both marts from the full history of valid sales.

Independent of the stream app's tables: it reads `<ns>.sales.valid` (every accepted sale,
once: `ValidSales` records, written in the stream app's transactions) and the dimension
topics, aggregates with the same pure metric math, and swaps the new rows in atomically. For
the same input it gives the streaming result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from mart_builder.builder import FlushResult
from mart_builder.metrics import MartRules, aggregate, customer_rows, data_as_of, team_rows
from mart_builder.model import Customer, SalesPerson
from mart_builder.writer import MartWriter
from salesflow.codec import Codec, codec_for
from salesflow.dead_letters import Rejection
from salesflow.dimensions import read_record
from salesflow.kafka import read_all
from salesflow.sale import Sale
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")


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


def valid_sales(settings: Settings, codec: Codec,
                on_progress: Callable[[int], None] | None = None) -> Iterator[Sale]:
    """Every accepted sale, from `<ns>.sales.valid`."""
    for msg in read_all(settings, Topics(settings.namespace).valid_sales):
        for entry in codec.decode(msg.value()).record["messages"]:
            sales = codec.decode_sales(entry["message"]).sales
            for index in entry["accepted"]:
                yield sales[index]
            if on_progress:
                on_progress(len(entry["accepted"]))


def rebuild(settings: Settings, writer: MartWriter,
            on_progress: Callable[[int], None] | None = None) -> FlushResult:
    started = time.perf_counter()
    codec = codec_for(settings)
    by_customer, by_team = aggregate(valid_sales(settings, codec, on_progress))
    dims = read_dimensions(settings, codec)
    customers = {r["customer_id"]: Customer.from_record(r) for r in dims["customer"].values()}
    people = {r["id"]: SalesPerson.from_record(r) for r in dims["sales_team"].values()}
    rules = MartRules.from_settings(settings)
    cust_rows = (customer_rows(by_customer.values(), customers, rules,
                               rules.as_of or data_as_of(by_customer.values()))
                 if by_customer else [])
    team = team_rows(by_team.values(), people, rules)
    writer.write([], [], {name: list(records.values()) for name, records in dims.items()})
    writer.replace_all(cust_rows, team)
    return FlushResult(len(cust_rows), len(team), sum(len(d) for d in dims.values()),
                       time.perf_counter() - started)
