"""What happens to one message of `<ns>.sales`: decode, dedup, validate, park or accept.

No Kafka here: the processor reads and writes plain mappings (Faust tables in the worker,
dicts in unit tests) and returns what the agent must send. Writes are buffered per message
and applied once per key, so a packed message of many sales costs one table write per
distinct key, not one per sale.

Per sale, in order:
1. `sale_id` accepted before: by this very position → a redelivery after a crash, re-apply
   (the watermarks skip what is already in); same content → an exact replay, dropped and
   counted; else the rules run and a sale that passes them is a `conflicting_duplicate`.
2. The data contract's rules (`validation.py`). A reference that is not (yet) known parks
   the sale for `retry_seconds`; parked sales are re-published to their own partition once
   their dimension arrives or their window ends, and then go through this path again.
3. Accepted: remembered in `seen`, added to the partition-local aggregates, sent on to the
   valid-sales topic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from salesflow.codec import Codec, Decoded
from salesflow.dead_letters import DeadLetter, Reason, Rejection
from salesflow.errors import DecodeError
from stream_app import state
from stream_app.validation import REFERENCE_REASONS, Dimensions, unknown_reference, validate

RETRY_HEADER = "salesflow-first-seen"  # on a re-published parked sale: when it first arrived
TICK = b"salesflow-tick"  # a message that only wakes a partition up to look at parked sales


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass
class Effects:
    """What the agent sends after a message; counts go to metrics."""

    dead: list[DeadLetter] = field(default_factory=list)
    valid: list[tuple[str, bytes]] = field(default_factory=list)  # (sale_id, Avro sale)
    republish: list[tuple[bytes, bytes, float]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class Tables:
    """The processor's view of the state, buffering writes until `commit()`."""

    def __init__(self, seen: MutableMapping, customers: MutableMapping, team: MutableMapping,
                 parked: MutableMapping, counts: MutableMapping) -> None:
        self.stores = {"seen": seen, "customers": customers, "team": team, "parked": parked,
                       "counts": counts}
        self._dirty: dict[str, dict[str, Any]] = {name: {} for name in self.stores}

    def get(self, table: str, key: str) -> Any:
        dirty = self._dirty[table]
        return dirty[key] if key in dirty else self.stores[table].get(key)

    def put(self, table: str, key: str, value: Any) -> None:
        self._dirty[table][key] = value

    def commit(self) -> int:
        """Write each changed key once; returns the number of table writes."""
        writes = 0
        for name, dirty in self._dirty.items():
            store = self.stores[name]
            for key, value in dirty.items():
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
                writes += 1
            dirty.clear()
        return writes


class Processor:
    def __init__(self, codec: Codec, dims: Dimensions, retry_seconds: float,
                 clock: Callable[[], float] = time.time,
                 today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self.codec = codec
        self.dims = dims
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.today = today

    def handle(self, msg: Incoming, tables: Tables) -> Effects:
        """Process one message; the caller commits `tables` and sends the effects."""
        fx = Effects()
        counts_key = str(msg.partition)
        counted = tables.get("counts", counts_key) or {"offset": -1}
        first_time = msg.offset > counted["offset"]  # False on redelivery after a crash
        first_seen = _first_seen(msg.headers)
        republished = first_seen is not None
        if msg.value != TICK:
            try:
                decoded = self.codec.decode(msg.value)
            except DecodeError as exc:
                decoded = None
                fx.dead.append(self._dead(msg, msg.value or b"", None, Rejection(
                    Reason.UNDECODABLE, str(exc)), None))
                fx.counts["in"] += 1
            if decoded is not None:
                sales = (decoded.record["sales"] if decoded.name == "sale_batch"
                         else [decoded.record] if decoded.name == "sale" else None)
                if sales is None:
                    fx.dead.append(self._dead(msg, msg.value or b"", None, Rejection(
                        Reason.UNDECODABLE, f"a {decoded.name} record is not a sale"),
                        decoded))
                    fx.counts["in"] += 1
                else:
                    if not republished:
                        fx.counts["in"] += len(sales)
                    for index, sale in enumerate(sales):
                        self._sale(msg, index, sale, decoded, first_seen or self.clock(),
                                   republished, tables, fx)
        if msg.value == TICK:  # not per sale message: the scan stays off the hot path
            self._revisit_parked(msg, tables, fx)
        for dead in fx.dead:
            fx.counts[f"dead_lettered:{dead.reason.value}"] += 1
        if first_time:
            totals = Counter(counted.get("totals", {}))
            totals.update(fx.counts)
            tables.put("counts", counts_key, {"offset": msg.offset, "totals": dict(totals)})
        return fx

    def _sale(self, msg: Incoming, index: int, sale: dict[str, Any], decoded: Decoded,
              first_seen: float, republished: bool, tables: Tables, fx: Effects) -> None:
        pos = (msg.offset, index)
        sale_id = sale.get("sale_id") or ""
        content = state.digest(sale)
        prior = tables.get("seen", sale_id) if sale_id else None
        if republished:
            fx.counts["pending"] -= 1
        if prior is not None:
            if (prior[1], prior[2]) == pos:  # this very sale, redelivered after a crash
                # The on-disk `seen` store may hold it while its changelog record was lost.
                tables.put("seen", sale_id, prior)
                self._apply(msg, pos, sale, tables, fx)
                return
            if prior[0] == content:
                fx.counts["replays"] += 1
                return
        rejection = validate(sale, self.dims, self.today())
        if rejection is None and prior is not None:
            rejection = Rejection(Reason.CONFLICTING_DUPLICATE,
                                  f"sale_id {sale_id!r} was accepted with other content")
        if rejection is None:
            tables.put("seen", sale_id, [content, *pos])
            self._apply(msg, pos, sale, tables, fx)
        elif (rejection.reason in REFERENCE_REASONS
              and self.clock() - first_seen < self.retry_seconds):
            tables.put("parked", f"{msg.partition}:{msg.offset}:{index}", {
                "sale": self.codec.encode("sale", sale).hex(), "first_seen": first_seen,
                "key": (msg.key or b"").hex(), "done": False})
            fx.counts["pending"] += 1
        else:
            value = self.codec.encode("sale", sale) if decoded.name == "sale_batch" \
                else msg.value or b""
            fx.dead.append(self._dead(msg, value, sale_id, rejection, decoded))

    def _apply(self, msg: Incoming, pos: state.Position, sale: dict[str, Any],
               tables: Tables, fx: Effects) -> None:
        f = state.facts(sale)
        for table, key, apply in (
            ("customers", state.customer_key(msg.partition, f), state.apply_customer),
            ("team", state.team_key(msg.partition, f), state.apply_team),
        ):
            new = apply(tables.get(table, key), f, pos)
            if new is not None:
                tables.put(table, key, new)
        fx.valid.append((f.sale_id, self.codec.encode("sale", sale)))
        fx.counts["accepted"] += 1

    def _revisit_parked(self, msg: Incoming, tables: Tables, fx: Effects) -> None:
        """Re-publish parked sales whose dimension arrived or whose window ended (on the ticks
        the worker sends each second to partitions that have unfinished parked sales).

        A parked entry is marked done rather than deleted, in the same changelog write, so a
        redelivered message re-publishes it again instead of losing it; the copy that arrives
        second is then an exact replay. Entries parked by later offsets are left alone (after a
        crash they may already be in the recovered state).
        """
        store = tables.stores["parked"]
        if not store:
            return
        now = self.clock()
        mine = [(pos, key) for key in list(store)
                if (pos := _parked_position(key))[0] == msg.partition and pos[1] < msg.offset]
        for _, key in sorted(mine):
            entry = tables.get("parked", key)
            if entry is None:
                continue
            if entry["done"]:
                if entry["done"] == msg.offset:  # redelivery of the message that re-published it
                    fx.republish.append(_republish(entry))
                elif now - entry["first_seen"] > self.retry_seconds + 3600:
                    tables.put("parked", key, None)  # long settled: forget it
                continue
            sale = self.codec.decode(bytes.fromhex(entry["sale"])).record
            if unknown_reference(sale, self.dims) is None or \
                    now - entry["first_seen"] >= self.retry_seconds:
                tables.put("parked", key, {**entry, "done": msg.offset})
                fx.republish.append(_republish(entry))

    def _dead(self, msg: Incoming, value: bytes, sale_id: str | None, rejection: Rejection,
              decoded: Decoded | None) -> DeadLetter:
        return DeadLetter(value=value, key=msg.key, reason=rejection.reason,
                          message=rejection.message, source=msg.topic,
                          partition=msg.partition, offset=msg.offset,
                          fingerprint=decoded.fingerprint if decoded else None,
                          sale_id=sale_id or None)


def _first_seen(headers: dict[str, bytes]) -> float | None:
    raw = headers.get(RETRY_HEADER)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _parked_position(key: str) -> tuple[int, int, int]:
    partition, offset, index = key.split(":")
    return int(partition), int(offset), int(index)


def _republish(entry: dict[str, Any]) -> tuple[bytes, bytes, float]:
    return bytes.fromhex(entry["key"]), bytes.fromhex(entry["sale"]), entry["first_seen"]
