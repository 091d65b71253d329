"""`salesflow marts rebuild`: both marts from the full history of valid sales.

Independent of the stream app's tables: it reads the compacted valid-sales topic (one record
per accepted `sale_id`) and the dimension topics, aggregates with the same pure metric math,
and swaps the new rows in atomically. For the same input it gives the streaming result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mart_builder.builder import FlushResult
from mart_builder.metrics import MartRules, aggregate, customer_rows, data_as_of, team_rows
from mart_builder.model import Customer, SalesPerson
from mart_builder.writer import MartWriter
from salesflow.codec import Codec, codec_for
from salesflow.kafka import read_all
from salesflow.settings import Settings
from salesflow.topics import Topics
from stream_app import state


def read_dimensions(settings: Settings, codec: Codec) -> dict[str, dict[bytes, dict[str, Any]]]:
    """The latest record per key of each dimension topic."""
    out: dict[str, dict[bytes, dict[str, Any]]] = {}
    for name, topic in Topics(settings.namespace).dims.items():
        latest: dict[bytes, dict[str, Any]] = {}
        for msg in read_all(settings, topic):
            if msg.value() is None:
                latest.pop(msg.key(), None)
            else:
                latest[msg.key()] = codec.decode(msg.value()).record
        out[name] = latest
    return out


def rebuild(settings: Settings, writer: MartWriter,
            on_progress: Callable[[int], None] | None = None) -> FlushResult:
    started = time.perf_counter()
    codec = codec_for(settings)
    sales: dict[bytes, Any] = {}
    for n, msg in enumerate(read_all(settings, Topics(settings.namespace).valid_sales), 1):
        if msg.value() is None:
            sales.pop(msg.key(), None)
        else:
            sales[msg.key()] = state.facts(codec.decode(msg.value()).record)
        if on_progress and n % 10_000 == 0:
            on_progress(10_000)
    dims = read_dimensions(settings, codec)
    customers = {r["customer_id"]: Customer(r["customer_id"], r["first_name"], r["last_name"],
                                            r["address"], r["pincode"], r["phone_number"])
                 for r in dims["customer"].values()}
    people = {r["id"]: SalesPerson(r["id"], r["first_name"], r["last_name"])
              for r in dims["sales_team"].values()}
    rules = MartRules.from_settings(settings)
    by_customer, by_team = aggregate(sales.values())
    cust_rows = (customer_rows(by_customer.values(), customers, rules,
                               rules.as_of or data_as_of(by_customer.values()))
                 if by_customer else [])
    team = team_rows(by_team.values(), people, rules)
    writer.write([], [], {name: list(records.values()) for name, records in dims.items()})
    writer.replace_all(cust_rows, team)
    return FlushResult(len(cust_rows), len(team), sum(len(d) for d in dims.values()),
                       time.perf_counter() - started)
