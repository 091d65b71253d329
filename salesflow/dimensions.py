"""Reading one record of a dimension topic, the same way in every reader.

The stream app, the mart builder and the rebuild all follow the compacted `<ns>.dim.*`
topics. Each record is decoded with its own topic's schema and checked against the data
contract's bounds; a record that fails (garbage bytes, a record of another dimension, an
id that is not its key, a field too long for the marts) is a `Rejection`, which readers skip
(the stream app also dead-letters it, once), so one bad record never stops anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from salesflow.codec import Codec
from salesflow.dead_letters import Reason, Rejection
from salesflow.errors import DecodeError
from salesflow.sale import MAX_ID, MAX_MONEY_CENTS, MAX_TEXT, ProductPrice, cents

ID_FIELD = {"customer": "customer_id", "store": "id", "product": "id", "sales_team": "id"}


@dataclass(frozen=True, slots=True)
class DimensionRecord:
    name: str  # the dimension: customer, store, product, sales_team
    id: int
    record: dict[str, Any]  # decoded with its logical types

    @property
    def price(self) -> ProductPrice:
        """A product's prices (products only)."""
        r = self.record
        return ProductPrice(cents(r["current_price"]),
                            None if r["old_price"] is None else cents(r["old_price"]),
                            r["updated_date"])


def read_record(codec: Codec, name: str, key: bytes | None,
                value: bytes) -> DimensionRecord | Rejection:
    """A record of the `name` dimension topic, or why it cannot be one."""
    try:
        decoded = codec.decode(value)
    except DecodeError as exc:
        return Rejection(Reason.UNDECODABLE, str(exc))
    if decoded.name != name:
        return Rejection(Reason.UNDECODABLE, f"a {decoded.name} record on the {name} topic")
    record = decoded.record
    record_id = record[ID_FIELD[name]]
    if key is None or key != str(record_id).encode():
        return Rejection(Reason.UNDECODABLE,
                         f"{name} {record_id} under key {key!r}: the key must be its id")
    rejection = bounds_rejection(name, record)
    if rejection is not None:
        return rejection
    return DimensionRecord(name, record_id, record)


def bounds_rejection(name: str, record: dict[str, Any]) -> Rejection | None:
    """`out_of_bounds` when a value of a `name` record cannot be held by the marts (the data
    contract's bounds); the dimension producer applies the same check to CSV rows."""
    record_id = record[ID_FIELD[name]]
    if not 1 <= record_id <= MAX_ID:
        return Rejection(Reason.OUT_OF_BOUNDS, f"{name} id {record_id} is outside 1..{MAX_ID}")
    if name == "sales_team" and record["manager_id"] is not None and \
            not 1 <= record["manager_id"] <= MAX_ID:
        return Rejection(Reason.OUT_OF_BOUNDS, f"manager_id {record['manager_id']} is outside "
                         f"1..{MAX_ID}")
    for column, text in record.items():
        if isinstance(text, str) and len(text) > MAX_TEXT:
            return Rejection(Reason.OUT_OF_BOUNDS,
                             f"{name} {record_id}: {column} is longer than {MAX_TEXT} characters")
    if name == "product":
        for column in ("current_price", "old_price"):
            amount = record[column]
            if amount is not None and not 0 <= cents(amount) <= MAX_MONEY_CENTS:
                return Rejection(Reason.OUT_OF_BOUNDS,
                                 f"product {record_id}: {column} {amount} is out of range")
    return None


def key_id(key: bytes | None) -> int | None:
    """The id a tombstone deletes (None when the key is not an id)."""
    try:
        return int(key) if key is not None else None
    except ValueError:
        return None
