"""What happens to a message of `<ns>.sales`: decode, route, dedup, validate, park or accept.

No Kafka here. The worker hands each message to `Processor.handle` with the `PartitionState`
of its partition and an `Output` to fill, and turns both into one Kafka transaction. Within a
transaction a key's value is read once and written once, however many sales touch it.

Per sale, in order:
1. A sale whose home partition (`crc32(sale_id) % partitions`) is not this one is forwarded
   there and counted `rerouted`: every copy of a `sale_id` meets on its home partition.
2. `sale_id` accepted before: with the same content an exact replay (dropped, counted), else
   the rules run and a sale that passes them is a `conflicting_duplicate`.
3. The data contract's rules (`validation.py`). A reference that is not (yet) known parks the
   sale for `retry_seconds`; `revisit_parked` (run by the worker's timer) takes it up again
   when the dimension arrives or the window ends. No control message travels on the topic.
4. Accepted: remembered in `seen`, added to the partition's aggregates, and listed in the
   `ValidSales` record of its message (the history `marts rebuild` reads).
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NamedTuple, Protocol

from salesflow.anomalies import AnomalyRules
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter, Reason, Rejection
from salesflow.errors import DecodeError
from salesflow.sale import ProductPrice, Sale, month_of
from salesflow.sale_wire import AcceptedFrom
from salesflow.tables import (
    COUNTS,
    COUNTS_KEY,
    CUSTOMERS,
    DIMENSIONS_KEY,
    PARKED,
    PRICE_FLAGS,
    SEEN,
    TEAM,
    CustomerMonth,
    Parked,
    PartitionCounts,
    PriceFlag,
    TeamMonth,
    customer_key,
    parked_key,
    team_key,
)
from stream_app.validation import REFERENCE_REASONS, Dimensions, Rules, unknown_reference


class StoreReader(Protocol):
    """What a `PartitionState` reads committed state from (RocksDB, or a dict in tests)."""

    def get(self, table: str, key: bytes) -> bytes | None: ...

    def get_many(self, table: str, keys: list[bytes]) -> list[bytes | None]: ...

    def items(self, table: str): ...  # Iterator[tuple[bytes, bytes]]


class Incoming(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0  # when the producer sent it (0: unknown)


class AggregateCache:
    """Committed aggregates of one partition, decoded, so that a key a later transaction
    touches again is neither read from RocksDB nor decoded again. It holds only committed
    values (a transaction works on copies), and forgets everything past `limit` entries."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.customers: dict[tuple[int, str], CustomerMonth] = {}
        self.team: dict[tuple[int, int, str], TeamMonth] = {}

    def update(self, customers: dict, team: dict) -> None:
        if len(self.customers) + len(self.team) > self.limit:
            self.customers.clear()
            self.team.clear()
        self.customers.update(customers)
        self.team.update(team)


class PartitionState:
    """One sales partition's tables during one transaction.

    Reads fall through to the committed store; writes stay here until `changes()`, which the
    worker sends to the changelogs and, once the transaction has committed, to the store
    (and `committed()` to the cache). Dropping the object is the rollback.
    """

    def __init__(self, partition: int, store: StoreReader,
                 cache: AggregateCache | None = None, anomalies: bool = True) -> None:
        self.partition = partition
        self._store = store
        self._cache = cache or AggregateCache()
        self._anomalies = anomalies  # keep the stores of each customer-day
        self._price_flags: dict[bytes, PriceFlag] = {}
        self.seen_new: dict[bytes, bytes] = {}
        # keyed by tuples: a key is encoded only when it is first read from the store
        self._customers: dict[tuple[int, str], CustomerMonth] = {}
        self._team: dict[tuple[int, int, str], TeamMonth] = {}
        self._parked: dict[bytes, Parked | None] = {}
        raw = store.get(COUNTS, COUNTS_KEY)
        self.counts = PartitionCounts.decode(raw) if raw else PartitionCounts()
        self.counts_before = PartitionCounts.decode(raw) if raw else PartitionCounts()
        raw = store.get(COUNTS, DIMENSIONS_KEY)
        # "topic/partition" -> the next offset of a dimension partition not looked at yet
        self.dimension_offsets: dict[str, int] = json.loads(raw) if raw else {}
        self._dimensions_changed = False
        self._first_offset: int | None = None
        self._counts_changed = False

    def applied(self, offset: int, timestamp_ms: int = 0) -> bool:
        """Mark a message as applied; False if the state already holds it."""
        counts = self.counts
        if counts.last_offset is not None and offset <= counts.last_offset:
            return False
        if self._first_offset is None:
            self._first_offset = offset
        counts.last_offset = offset
        if timestamp_ms > counts.newest_ms:
            counts.newest_ms = timestamp_ms
        self._counts_changed = True
        return True

    def looked_at_dimensions(self, upto: dict[str, int]) -> None:
        self.dimension_offsets.update(upto)
        self._dimensions_changed = True

    def counted(self) -> PartitionCounts:
        self._counts_changed = True
        return self.counts

    def seen(self, sale_id: bytes) -> bytes | None:
        digest = self.seen_new.get(sale_id)
        return digest if digest is not None else self._store.get(SEEN, sale_id)

    def seen_stored(self, sale_ids: list[bytes]) -> list[bytes | None]:
        """The committed digests of many sale ids in one read (this transaction's own
        acceptances are in `seen_new`)."""
        return self._store.get_many(SEEN, sale_ids)

    def accept(self, sale_id: bytes, digest: bytes, sale: Sale) -> None:
        self.seen_new[sale_id] = digest
        month = month_of(sale.sales_date)
        ckey = (sale.customer_id, month)
        agg = self._customers.get(ckey)
        if agg is None:
            agg = self._cache.customers.get(ckey)
            if agg is not None:
                agg = agg.copy()
            else:
                key = customer_key(*ckey)
                raw = self._store.get(CUSTOMERS, key)
                agg = (CustomerMonth.decode(key, raw) if raw else
                       CustomerMonth(sale.customer_id, month))
            self._customers[ckey] = agg
        agg.add(sale)
        if self._anomalies:
            agg.add_store(sale.sales_date, sale.store_id)
        tkey = (sale.store_id, sale.sales_person_id, month)
        tagg = self._team.get(tkey)
        if tagg is None:
            tagg = self._cache.team.get(tkey)
            if tagg is not None:
                tagg = tagg.copy()
            else:
                key = team_key(*tkey)
                raw = self._store.get(TEAM, key)
                tagg = TeamMonth.decode(key, raw) if raw else TeamMonth(*tkey)
            self._team[tkey] = tagg
        tagg.add(sale)

    def flag_price(self, flag: PriceFlag) -> None:
        self._price_flags[flag.key] = flag

    def park(self, key: bytes, entry: Parked) -> None:
        self._parked[key] = entry

    def unpark(self, key: bytes) -> None:
        self._parked[key] = None

    def parked(self) -> list[tuple[bytes, Parked]]:
        """Every sale waiting now, oldest arrival first."""
        entries = {k: Parked.decode(v) for k, v in self._store.items(PARKED)}
        for key, entry in self._parked.items():
            if entry is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
        return sorted(entries.items())

    @property
    def dirty(self) -> bool:
        return bool(self._counts_changed or self.seen_new or self._customers or self._team
                    or self._parked or self._dimensions_changed or self._price_flags)

    def committed(self) -> None:
        """The transaction committed: its aggregates are the cache's now."""
        self._cache.update(self._customers, self._team)

    def changes(self) -> dict[str, dict[bytes, bytes | None]]:
        """Every changed key of the compacted tables, with its new value (None: deleted)."""
        out: dict[str, dict[bytes, bytes | None]] = {}
        if self._customers:
            out[CUSTOMERS] = {v.key: v.encode() for v in self._customers.values()}
        if self._team:
            out[TEAM] = {v.key: v.encode() for v in self._team.values()}
        if self._parked:
            out[PARKED] = {k: None if v is None else v.encode() for k, v in self._parked.items()}
        if self._price_flags:
            out[PRICE_FLAGS] = {k: v.encode() for k, v in self._price_flags.items()}
        if self._counts_changed or self._dimensions_changed:
            counts = out[COUNTS] = {}
            if self._counts_changed:
                self.counts.first_offset = self._first_offset
                counts[COUNTS_KEY] = self.counts.encode()
            if self._dimensions_changed:
                counts[DIMENSIONS_KEY] = json.dumps(self.dimension_offsets).encode()
        return out


@dataclass
class Output:
    """What a transaction sends besides the changelogs. (What it did to the counts is in
    each `PartitionState`; `stats` counts the rest, for the metrics.)"""

    valid: dict[int, list[AcceptedFrom]] = field(default_factory=dict)  # partition -> entries
    dead: list[DeadLetter] = field(default_factory=list)
    reroute: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (partition, key, value)
    stats: Counter[str] = field(default_factory=Counter)

    def clear(self) -> None:
        self.valid.clear()
        self.dead.clear()
        self.reroute.clear()
        self.stats.clear()


DEFAULT_ANOMALY_RULES = AnomalyRules()


class Processor:
    def __init__(self, codec: Codec, dims: Dimensions, partitions: int, retry_seconds: float, *,
                 anomalies: AnomalyRules | None = DEFAULT_ANOMALY_RULES,
                 clock: Callable[[], float] = time.time,
                 today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self.codec = codec
        self.dims = dims
        self.anomalies = anomalies  # None: no anomaly state
        self.partitions = partitions
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.today = today
        self._rules = Rules(dims, today())

    def _rules_for(self, today: date) -> Rules:
        if self._rules.today != today:
            self._rules = Rules(self.dims, today)
        return self._rules

    def handle(self, msg: Incoming, state: PartitionState, out: Output) -> None:
        """Apply one message of the sales topic to its partition's state."""
        if not state.applied(msg.offset, msg.timestamp_ms):
            out.stats["already_applied"] += 1
            return
        counts = state.counts
        try:
            decoded = self.codec.decode_sales(msg.value)
        except DecodeError as exc:
            counts.records_in += 1
            self._dead(out, counts, msg.topic, msg.partition, msg.offset, msg.key,
                       msg.value or b"", None, Rejection(Reason.UNDECODABLE, str(exc)),
                       exc.fingerprint)
            return
        single = decoded.name == "sale"
        rules, now = self._rules_for(self.today()), self.clock()
        partition, partitions, crc32 = msg.partition, self.partitions, zlib.crc32
        accepted: list[int] = []
        prices: list[int] = []
        rerouted = 0
        accept, check, seen_new = state.accept, rules.check, state.seen_new
        products = self.dims.products
        sales = decoded.sales
        sale_ids = [sale.sale_id.encode() for sale in sales]
        stored = state.seen_stored(sale_ids)
        for index, sale in enumerate(sales):
            sale_id = sale_ids[index]
            if crc32(sale_id) % partitions != partition and sale_id:
                out.reroute.append((crc32(sale_id) % partitions, sale_id,
                                    msg.value if single  # type: ignore[arg-type]
                                    else self.codec.encode_sale(sale)))
                rerouted += 1
                continue
            # The common case inline: a new sale that breaks no rule.
            digest = sale.digest()
            if sale_id and stored[index] is None and sale_id not in seen_new and \
                    check(sale) is None:
                accept(sale_id, digest, sale)
                accepted.append(index)
                prices.append(self._list_price(sale, products, state))
                continue
            price = self._sale(sale, sale_id, digest, state, out, rules, now, msg.topic,
                               partition, msg.offset, index, msg.key,
                               msg.value if single else None, decoded.fingerprint, now)
            if price is not None:
                accepted.append(index)
                prices.append(price)
        arrived = len(sales) - rerouted
        counts.records_in += arrived
        counts.rerouted += rerouted
        counts.accepted += len(accepted)
        if accepted:
            out.valid.setdefault(partition, []).append(
                (msg.value, accepted, prices))  # type: ignore[arg-type]

    def revisit_parked(self, state: PartitionState, out: Output, topic: str) -> int:
        """Take up the parked sales whose dimension arrived or whose window ended; returns how
        many are still waiting."""
        now, rules = self.clock(), self._rules_for(self.today())
        waiting = 0
        for key, entry in state.parked():
            sale = self.codec.decode_sales(entry.message).sales[0]
            if unknown_reference(sale, self.dims) is not None and \
                    now - entry.first_seen < self.retry_seconds:
                waiting += 1
                continue
            state.unpark(key)
            counts = state.counted()
            counts.waiting -= 1
            offset, index = (int(part) for part in key.decode().split(":"))
            price = self._sale(sale, sale.sale_id.encode(), sale.digest(), state, out, rules,
                               now, topic, state.partition, offset, index, entry.key,
                               entry.message, None, entry.first_seen)
            if price is not None:
                counts.accepted += 1
                out.valid.setdefault(state.partition, []).append((entry.message, [0], [price]))
        return waiting

    def _sale(self, sale: Sale, sale_id: bytes, digest: bytes, state: PartitionState,
              out: Output, rules: Rules, now: float, topic: str, partition: int, offset: int,
              index: int, key: bytes | None, single: bytes | None, fingerprint: bytes | None,
              first_seen: float) -> int | None:
        """One sale on its home partition; returns its list price if it was accepted (the
        caller counts it), None if it was dropped, parked or dead-lettered (counted here)."""
        counts = state.counts
        prior = state.seen(sale_id) if sale_id else None
        if prior is not None and prior == digest:
            counts.replays += 1
            return None
        rejection = rules.check(sale)
        if rejection is None and prior is not None:
            rejection = Rejection(Reason.CONFLICTING_DUPLICATE,
                                  f"sale_id {sale.sale_id!r} was accepted with other content")
        if rejection is None:
            state.accept(sale_id, digest, sale)
            return self._list_price(sale, self.dims.products, state)
        value = single if single is not None else self.codec.encode_sale(sale)
        if rejection.reason in REFERENCE_REASONS and now - first_seen < self.retry_seconds:
            state.park(parked_key(offset, index), Parked(first_seen, key, value))
            counts.waiting += 1
            return None
        self._dead(out, counts, topic, partition, offset, key, value, sale.sale_id or None,
                   rejection, fingerprint)
        return None

    def _list_price(self, sale: Sale, products: Mapping[str, ProductPrice],
                    state: PartitionState) -> int:
        """The list price an accepted sale is checked against; a sale off it is flagged."""
        product = products.get(sale.product_name)
        listed = product.list_cents(sale.sales_date) if product else sale.price_cents
        if self.anomalies is not None and listed != sale.price_cents and \
                self.anomalies.price_off_list(sale.price_cents, listed):
            state.flag_price(PriceFlag(sale.sale_id, sale.customer_id, sale.store_id,
                                       sale.sales_person_id, sale.sales_date,
                                       sale.price_cents, listed))
        return listed

    @staticmethod
    def _dead(out: Output, counts: PartitionCounts, topic: str, partition: int, offset: int,
              key: bytes | None, value: bytes, sale_id: str | None, rejection: Rejection,
              fingerprint: bytes | None) -> None:
        reason = rejection.reason.value
        counts.dead_lettered[reason] = counts.dead_lettered.get(reason, 0) + 1
        out.dead.append(DeadLetter(value=value, key=key, reason=rejection.reason,
                                   message=rejection.message, source=topic,
                                   partition=partition, offset=offset,
                                   fingerprint=fingerprint, sale_id=sale_id))
