"""The stream app's state tables: the typed contract between the stream app and its readers.

The stream app keeps every table partition-local (a key lives in the state of the sales
partition whose sales made it) in RocksDB, with a changelog topic per table
(`Topics.changelog(name)`, co-partitioned with `<ns>.sales`). The mart builder reads the
`customers` and `team` changelogs and sums their per-partition partials; `salesflow status` and
the tests read `counts`. Nothing else reads or writes them, and nobody parses their bytes but
this module.

| table     | key (bytes)                  | value                                   | changelog |
|-----------|------------------------------|-----------------------------------------|-----------|
| customers | `<customer_id>|<YYYY-MM>`    | `CustomerMonth` (5 numbers, day stores) | compacted |
| team      | `<store>|<person>|<YYYY-MM>` | `TeamMonth` (struct of 3 numbers)       | compacted |
| counts    | `totals`                     | `PartitionCounts` (JSON)                | compacted |
| counts    | `dimensions`                 | dimension offsets checked (JSON)        | compacted |
| parked    | `<offset>:<index>`           | `Parked`: a sale waiting for a dimension | compacted |
| price_flags | a `sale_id`                | `PriceFlag`: a sale off its list price  | compacted |
| seen      | a `sale_id`                  | its content digest (12 bytes)           | packed log |

`seen` entries never change nor go away, so its changelog is not compacted: each record packs
the (sale_id, digest) pairs of one commit, and a new machine restores a million of them in a
few seconds instead of reading a million records.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

from salesflow.sale import Sale

CUSTOMERS, TEAM, COUNTS, PARKED, SEEN = "customers", "team", "counts", "parked", "seen"
PRICE_FLAGS = "price_flags"
TABLES = (SEEN, CUSTOMERS, TEAM, PARKED, COUNTS, PRICE_FLAGS)
APPEND_ONLY = frozenset({SEEN})  # changelogs that are logs, not compacted tables
COUNTS_KEY = b"totals"
DIMENSIONS_KEY = b"dimensions"  # JSON {"<dim topic>/<partition>": next offset looked at}
DIGEST_BYTES = 12
# How long the compacted changelogs keep a deletion (`delete.retention.ms`): a local store last
# written longer ago than half of it may have missed one, and is restored afresh.
TOMBSTONE_RETENTION_SECONDS = 30 * 86400


# --- aggregates: partial per source partition, summed by the mart builder ----------------------

_CUSTOMER = struct.Struct("<qqqii")
_DAY = struct.Struct("<BB")  # day of the month, how many stores
# Stores kept per customer-day: what an entry's count byte holds (the `multi_store_day` rule's
# threshold is at most this; a hostile feed of more stores keeps the lowest ids).
MAX_STORES_PER_DAY = 255
_TEAM = struct.Struct("<qqq")


def customer_key(customer_id: int, month: str) -> bytes:
    return f"{customer_id}|{month}".encode()


def team_key(store_id: int, sales_person_id: int, month: str) -> bytes:
    return f"{store_id}|{sales_person_id}|{month}".encode()


@dataclass(slots=True)
class CustomerMonth:
    """One customer's valid sales in one month: total, count, largest, first and last day,
    and the distinct stores of each day (for the `multi_store_day` anomaly: a few ids per
    day, kept here so that it costs no changelog record of its own)."""

    customer_id: int
    month: str
    total_cents: int = 0
    count: int = 0
    max_cents: int = 0
    first_date: date | None = None
    last_date: date | None = None
    stores_by_day: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # `stores_by_day` encoded, kept in step by every change of it: a sale on a new day (most
    # of them) appends one entry instead of encoding every day again at each commit.
    days_encoded: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stores_by_day and not self.days_encoded:
            self.days_encoded = encode_days(self.stores_by_day)

    @property
    def key(self) -> bytes:
        return customer_key(self.customer_id, self.month)

    def copy(self) -> CustomerMonth:
        return CustomerMonth(self.customer_id, self.month, self.total_cents, self.count,
                             self.max_cents, self.first_date, self.last_date,
                             dict(self.stores_by_day),  # tuples: replaced, never changed
                             self.days_encoded)

    def add(self, sale: Sale) -> None:
        total = sale.total_cents
        self.total_cents += total
        if not self.count or total > self.max_cents:
            self.max_cents = total
        self.count += 1
        d = sale.sales_date
        if self.first_date is None or d < self.first_date:
            self.first_date = d
        if self.last_date is None or d > self.last_date:
            self.last_date = d

    def add_store(self, d: date, store_id: int) -> None:
        """Remember that the customer bought in `store_id` on `d` (ids kept sorted)."""
        stores = self.stores_by_day.get(d.day)
        if stores is None:
            self.stores_by_day[d.day] = (store_id,)
            self.days_encoded += _DAY_ENTRY[1].pack(d.day, 1, store_id)
        elif store_id not in stores and len(stores) < MAX_STORES_PER_DAY:
            self.stores_by_day[d.day] = tuple(sorted((*stores, store_id)))
            self.days_encoded = encode_days(self.stores_by_day)

    def merge(self, other: CustomerMonth) -> None:
        """Add another partial of the same key (from another source partition)."""
        if not other.count:
            return
        if not self.count:
            self.max_cents, self.first_date, self.last_date = (
                other.max_cents, other.first_date, other.last_date)
        else:
            self.max_cents = max(self.max_cents, other.max_cents)
            self.first_date = min(self.first_date, other.first_date)  # type: ignore[type-var]
            self.last_date = max(self.last_date, other.last_date)  # type: ignore[type-var]
        self.total_cents += other.total_cents
        self.count += other.count
        for day, stores in other.stores_by_day.items():
            mine = self.stores_by_day.get(day, ())
            self.stores_by_day[day] = tuple(sorted({*mine, *stores}))[:MAX_STORES_PER_DAY]
        if other.stores_by_day:
            self.days_encoded = encode_days(self.stores_by_day)

    def encode(self) -> bytes:
        assert self.first_date is not None and self.last_date is not None
        return _CUSTOMER.pack(self.total_cents, self.count, self.max_cents,
                              self.first_date.toordinal(),
                              self.last_date.toordinal()) + self.days_encoded

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> CustomerMonth:
        customer, month = key.decode().split("|")
        total, count, top, first, last = _CUSTOMER.unpack_from(value)
        return cls(int(customer), month, total, count, top, date.fromordinal(first),
                   date.fromordinal(last), stores_by_day(value), value[_CUSTOMER.size:])

    def days(self) -> dict[date, tuple[int, ...]]:
        """The distinct stores of each day with a sale."""
        year, month = int(self.month[:4]), int(self.month[5:7])
        return {date(year, month, day): stores for day, stores in self.stores_by_day.items()}


def stores_by_day(value: bytes) -> dict[int, tuple[int, ...]]:
    """The distinct stores of each day of an encoded `CustomerMonth` (day of the month ->
    store ids), read without the rest."""
    out: dict[int, tuple[int, ...]] = {}
    pos, end = _CUSTOMER.size, len(value)
    while pos < end:
        day, n = value[pos], value[pos + 1]  # _DAY
        pos += _DAY.size
        out[day] = _STORE_IDS[n].unpack_from(value, pos)
        pos += 4 * n
    return out


# A day's entry (day, n, n store ids) and n store ids, compiled once for every n (up to MAX_STORES_PER_DAY).
_DAY_ENTRY = [struct.Struct(f"<BB{n}I") for n in range(MAX_STORES_PER_DAY + 1)]
_STORE_IDS = [struct.Struct(f"<{n}I") for n in range(MAX_STORES_PER_DAY + 1)]


def encode_days(days: dict[int, tuple[int, ...]]) -> bytes:
    """`stores_by_day` as `CustomerMonth.encode` writes it after the fixed fields."""
    return b"".join(_DAY_ENTRY[len(s)].pack(day, len(s), *s) for day, s in days.items())


def could_hold_stores(value: bytes, stores: int) -> bool:
    """Whether an encoded `CustomerMonth` is long enough for a day of `stores` stores (a
    cheap test before `stores_by_day`)."""
    return len(value) >= _CUSTOMER.size + _DAY.size + 4 * stores


@dataclass(slots=True)
class TeamMonth:
    """One salesperson's valid sales in one store and month: total, count, largest."""

    store_id: int
    sales_person_id: int
    month: str
    total_cents: int = 0
    count: int = 0
    max_cents: int = 0

    @property
    def key(self) -> bytes:
        return team_key(self.store_id, self.sales_person_id, self.month)

    def copy(self) -> TeamMonth:
        return TeamMonth(self.store_id, self.sales_person_id, self.month, self.total_cents,
                         self.count, self.max_cents)

    def add(self, sale: Sale) -> None:
        total = sale.total_cents
        self.total_cents += total
        if not self.count or total > self.max_cents:
            self.max_cents = total
        self.count += 1

    def merge(self, other: TeamMonth) -> None:
        if not other.count:
            return
        self.max_cents = other.max_cents if not self.count else max(self.max_cents,
                                                                      other.max_cents)
        self.total_cents += other.total_cents
        self.count += other.count

    def encode(self) -> bytes:
        return _TEAM.pack(self.total_cents, self.count, self.max_cents)

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> TeamMonth:
        store, person, month = key.decode().split("|")
        return cls(int(store), int(person), month, *_TEAM.unpack(value))


# --- price flags: accepted sales off their product's list price -------------------------------

_PRICE_FLAG = struct.Struct("<qqqiqq")


@dataclass(frozen=True, slots=True)
class PriceFlag:
    """A sale accepted at a price off its list price (`price_off_list`), as it was decided."""

    sale_id: str
    customer_id: int
    store_id: int
    sales_person_id: int
    sales_date: date
    price_cents: int
    list_cents: int

    @property
    def key(self) -> bytes:
        return self.sale_id.encode()

    def encode(self) -> bytes:
        return _PRICE_FLAG.pack(self.customer_id, self.store_id, self.sales_person_id,
                                self.sales_date.toordinal(), self.price_cents, self.list_cents)

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> PriceFlag:
        customer, store, person, day, price, listed = _PRICE_FLAG.unpack(value)
        return cls(key.decode(), customer, store, person, date.fromordinal(day), price,
                   listed)


# --- counts: exact reconciliation per partition -----------------------------------------------


@dataclass(slots=True)
class PartitionCounts:
    """What one sales partition's records became, since the partition began.

    `records_in` counts sales read on their home partition (and undecodable messages);
    it always equals accepted + replays + dead-lettered + waiting. A sale that arrived on
    another partition is counted there as `rerouted` only, and as `in` at home.
    `first_offset`/`last_offset` are the sales offsets the latest commit applied (None when it
    applied no message, e.g. only parked sales): consecutive commits continue each other.
    `newest_ms` is the newest message timestamp (ms since the epoch: when the producer sent
    it) applied so far: how fresh the state of this partition is.
    """

    records_in: int = 0
    accepted: int = 0
    replays: int = 0
    waiting: int = 0
    rerouted: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    first_offset: int | None = None
    last_offset: int | None = None
    newest_ms: int = 0

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def reconciled(self) -> bool:
        return self.records_in == (self.accepted + self.replays + self.dead_lettered_total
                                   + self.waiting)

    def minus(self, before: PartitionCounts) -> dict[str, int]:
        """What changed since `before`, as metric names: in, accepted, replays, rerouted,
        waiting and dead_lettered:<reason>."""
        out = {"in": self.records_in - before.records_in,
               "accepted": self.accepted - before.accepted,
               "replays": self.replays - before.replays,
               "rerouted": self.rerouted - before.rerouted,
               "waiting": self.waiting - before.waiting}
        for reason, n in self.dead_lettered.items():
            out[f"dead_lettered:{reason}"] = n - before.dead_lettered.get(reason, 0)
        return out

    def add(self, other: PartitionCounts) -> None:
        """Sum of partitions (offsets are per partition and are not summed)."""
        self.records_in += other.records_in
        self.accepted += other.accepted
        self.replays += other.replays
        self.waiting += other.waiting
        self.rerouted += other.rerouted
        self.newest_ms = max(self.newest_ms, other.newest_ms)
        for reason, n in other.dead_lettered.items():
            self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + n

    def encode(self) -> bytes:
        return json.dumps({
            "in": self.records_in, "accepted": self.accepted, "replays": self.replays,
            "waiting": self.waiting, "rerouted": self.rerouted,
            "dead_lettered": self.dead_lettered, "first_offset": self.first_offset,
            "last_offset": self.last_offset, "newest_ms": self.newest_ms},
            separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> PartitionCounts:
        d = json.loads(value)
        return cls(d["in"], d["accepted"], d["replays"], d["waiting"], d["rerouted"],
                   dict(d["dead_lettered"]), d["first_offset"], d["last_offset"],
                   d.get("newest_ms", 0))


# --- parked: sales waiting for a dimension record ---------------------------------------------

_PARKED = struct.Struct("<dH")


def parked_key(offset: int, index: int) -> bytes:
    """Where the sale arrived: unique per partition, and in arrival order when sorted."""
    return f"{offset:020d}:{index:05d}".encode()


@dataclass(frozen=True, slots=True)
class Parked:
    """A sale whose customer, store, salesperson or product is not known yet."""

    first_seen: float  # wall-clock seconds when it first arrived
    key: bytes | None  # its message key on the sales topic
    message: bytes  # the sale as a single-sale message (the codec's framing)

    def encode(self) -> bytes:
        key = self.key or b""
        return _PARKED.pack(self.first_seen, len(key) + (self.key is not None)) + key + \
            self.message

    @classmethod
    def decode(cls, value: bytes) -> Parked:
        first_seen, key_len = _PARKED.unpack_from(value)
        start = _PARKED.size
        end = start + max(0, key_len - 1)
        return cls(first_seen, value[start:end] if key_len else None, value[end:])


# --- seen: accepted sale ids, packed per commit on the changelog --------------------------------

_LEN = struct.Struct("<H")


def pack_seen(entries: list[tuple[bytes, bytes]], limit: int = 512 * 1024) -> Iterator[bytes]:
    """(sale_id, digest) pairs as changelog values of at most ~`limit` bytes each."""
    pack = _LEN.pack
    out: list[bytes] = []
    size = 0
    for sale_id, digest in entries:
        out += (pack(len(sale_id)), sale_id, digest)
        size += 2 + len(sale_id) + DIGEST_BYTES
        if size >= limit:
            yield b"".join(out)
            out, size = [], 0
    if out:
        yield b"".join(out)


def unpack_seen(value: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos, end = 0, len(value)
    while pos < end:
        (n,) = _LEN.unpack_from(value, pos)
        pos += 2
        yield value[pos:pos + n], value[pos + n:pos + n + DIGEST_BYTES]
        pos += n + DIGEST_BYTES
