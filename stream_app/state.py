"""The stream app's state values and the watermark rule that makes them crash-safe.

Every table key is local to one source partition (keys start with the partition), so all
events that touch a key arrive in order from that partition. Each value carries the position
`(offset, index in message)` of the last sale applied to it, and a sale at or below that
position is skipped. State and watermark travel in the same changelog record, so after a
`kill -9` the redelivered events are applied exactly once without Kafka transactions.
Money is integer cents. Values are plain lists (JSON in the changelog, compact in memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from typing import Any

from mart_builder.model import CustomerMonth, SaleFacts, TeamMonth, month_of

Position = tuple[int, int]  # (source offset, index of the sale in its message)

# customer-month: [total_cents, count, max_cents, first_day, last_day, wm_offset, wm_index]
# team-month:     [total_cents, count, max_cents, wm_offset, wm_index]


def cents(amount: Any) -> int:
    """Exact integer cents of a Decimal amount at scale 2."""
    return int(amount.scaleb(2))


def facts(sale: Mapping[str, Any]) -> SaleFacts:
    return SaleFacts(sale["sale_id"], sale["customer_id"], sale["store_id"],
                     sale["sales_person_id"], sale["sales_date"], cents(sale["total_cost"]))


def digest(sale: Mapping[str, Any]) -> str:
    """A fingerprint of a sale's content: equal digests mean an exact replay."""
    text = "\x1f".join(str(sale[f]) for f in (
        "sale_id", "customer_id", "store_id", "product_name", "sales_date",
        "sales_person_id", "price", "quantity", "total_cost"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def customer_key(partition: int, sale: SaleFacts) -> str:
    return f"{partition}|{sale.customer_id}|{month_of(sale.sales_date)}"


def team_key(partition: int, sale: SaleFacts) -> str:
    return f"{partition}|{sale.store_id}|{sale.sales_person_id}|{month_of(sale.sales_date)}"


def apply_customer(value: list[int] | None, sale: SaleFacts, pos: Position) -> list[int] | None:
    """The customer-month value with `sale` applied, or None if it is already in it."""
    day = sale.sales_date.toordinal()
    if value is None:
        return [sale.total_cents, 1, sale.total_cents, day, day, *pos]
    if (value[5], value[6]) >= pos:
        return None
    total, count, top, first, last = value[:5]
    return [total + sale.total_cents, count + 1, max(top, sale.total_cents),
            min(first, day), max(last, day), *pos]


def apply_team(value: list[int] | None, sale: SaleFacts, pos: Position) -> list[int] | None:
    """The team-month value with `sale` applied, or None if it is already in it."""
    if value is None:
        return [sale.total_cents, 1, sale.total_cents, *pos]
    if (value[3], value[4]) >= pos:
        return None
    return [value[0] + sale.total_cents, value[1] + 1, max(value[2], sale.total_cents), *pos]


def parse_customer_key(key: str) -> tuple[int, int, str]:
    partition, customer, month = key.split("|")
    return int(partition), int(customer), month


def parse_team_key(key: str) -> tuple[int, int, int, str]:
    partition, store, person, month = key.split("|")
    return int(partition), int(store), int(person), month


def day(ordinal: int) -> date:
    return date.fromordinal(ordinal)


def to_customer_month(key: str, value: list[int]) -> CustomerMonth:
    """A changelog entry of the customer-month table as the mart builder's aggregate."""
    _, customer, month = parse_customer_key(key)
    total, count, top, first, last = value[:5]
    return CustomerMonth(customer, month, total, count, top, day(first), day(last))


def to_team_month(key: str, value: list[int]) -> TeamMonth:
    """A changelog entry of the team-month table as the mart builder's aggregate."""
    _, store, person, month = parse_team_key(key)
    return TeamMonth(store, person, month, value[0], value[1], value[2])
