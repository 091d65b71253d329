"""The mart builder: the stream app's aggregates in, whole mart rows out, every few seconds.

It follows the changelogs of the stream app's `customers` and `team` tables and the
dimension topics (no consumer group; every partition from the start), so it needs no access
to the workers' memory and a restarted builder simply reads them again. A flush recomputes
the rows of every customer and every store that changed since the last flush (a late sale
restates its month and every lifetime, rank, YTD, growth and contribution figure of that
customer or store; a newer data clock restates every customer's inactivity), then writes
only the rows whose values differ from what it wrote before, in one transaction. A flush that
fails keeps everything dirty, so the next one writes it: nothing processed is lost.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from mart_builder.metrics import (
    CUSTOMER_KEY,
    TEAM_KEY,
    MartRules,
    customer_rows,
    data_as_of,
    team_rows,
)
from mart_builder.model import Customer, SalesPerson
from mart_builder.writer import MartWriter
from salesflow import instrumentation
from salesflow.codec import codec_for
from salesflow.dead_letters import Rejection
from salesflow.dimensions import read_record
from salesflow.errors import KafkaUnavailable
from salesflow.kafka import client_config, end_offsets, watermarks
from salesflow.settings import Settings
from salesflow.tables import CUSTOMERS, TEAM, CustomerMonth, TeamMonth
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

@dataclass(frozen=True, slots=True)
class FlushResult:
    customer_rows: int
    team_rows: int
    dimension_rows: int
    seconds: float


class MartBuilder:
    def __init__(self, settings: Settings, writer: MartWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.rules = MartRules.from_settings(settings)
        self.codec = codec_for(settings)
        self._consumer: Consumer | None = None
        self._positions: dict[tuple[str, int], int] = {}
        # (changelog partition, key) -> that partition's partial aggregate
        self.customer_months: dict[tuple[int, bytes], CustomerMonth] = {}
        self.team_months: dict[tuple[int, bytes], TeamMonth] = {}
        self._keys_by_customer: dict[int, set[tuple[int, bytes]]] = defaultdict(set)
        self._keys_by_store: dict[int, set[tuple[int, bytes]]] = defaultdict(set)
        self.customers: dict[int, Customer] = {}
        self.people: dict[int, SalesPerson] = {}
        self._dim_records: dict[str, dict[bytes, dict[str, Any]]] = defaultdict(dict)
        self._dirty_dims: dict[str, set[bytes]] = defaultdict(set)
        self._dirty_customers: set[int] = set()
        self._dirty_stores: set[int] = set()
        self._written: dict[tuple, int] = {}  # row key -> hash of the row last written
        self._as_of: date | None = None
        self._last_rebuild: int | None = None
        topics = Topics(settings.namespace)
        self._sources = {
            topics.changelog(CUSTOMERS): self._aggregate_handler(
                self.customer_months, CustomerMonth.decode, self._keys_by_customer,
                self._dirty_customers, lambda agg: agg.customer_id),
            topics.changelog(TEAM): self._aggregate_handler(
                self.team_months, TeamMonth.decode, self._keys_by_store,
                self._dirty_stores, lambda agg: agg.store_id),
            **{topic: self._dimension_handler(name) for name, topic in topics.dims.items()},
        }

    # --- reading -----------------------------------------------------------------------------

    def catch_up(self, timeout: float = 60.0) -> None:
        """Read every source up to its end as of now."""
        consumer = self._connect()
        ends = {tp: high for tp, high in end_offsets(self.settings, self._positions).items()
                if high > self._positions[tp]}
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"could not read the changelogs within {timeout:.0f}s")
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise KafkaUnavailable(f"reading changelogs: {msg.error().str()}")
                    # The end of the log: a transaction's commit marker takes the last offset.
                    # Remember it as the position, or the next catch-up would wait for an end
                    # event that librdkafka does not repeat.
                    tp = (msg.topic(), msg.partition())
                    self._positions[tp] = max(self._positions.get(tp, 0), msg.offset())
                    ends.pop(tp, None)
                    continue
                tp = (msg.topic(), msg.partition())
                self._positions[tp] = msg.offset() + 1
                self._sources[msg.topic()](msg.partition(), msg.key(), msg.value())
                if ends.get(tp, 0) <= msg.offset() + 1:
                    ends.pop(tp, None)
            if ends:  # the position moves past transaction markers too
                for tp in consumer.position([TopicPartition(t, p) for t, p in ends]):
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        ends.pop((tp.topic, tp.partition))

    def _connect(self) -> Consumer:
        if self._consumer is None:
            consumer = Consumer(client_config(self.settings, **{
                "group.id": Topics(self.settings.namespace).reader_group,
                "enable.auto.commit": False, "enable.partition.eof": True,
                "fetch.wait.max.ms": 50}))
            md = consumer.list_topics(timeout=30)
            assignment = []
            for topic in self._sources:
                info = md.topics.get(topic)
                for partition in (info.partitions if info and not info.error else ()):
                    low = watermarks(consumer, TopicPartition(topic, partition), 30)[0]
                    assignment.append(TopicPartition(topic, partition, low))
                    self._positions[(topic, partition)] = low
            consumer.assign(assignment)
            self._consumer = consumer
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    @staticmethod
    def _aggregate_handler(aggs: dict, convert: Callable, keys_by_owner: dict,
                           dirty: set[int], owner: Callable[[Any], int]):
        """A changelog entry of an aggregate table: keep the latest value per key and mark
        its owner (the customer, or the store) for recomputation."""
        def handle(partition: int, key: bytes | None, value: bytes | None) -> None:
            if not key:
                return
            place = (partition, key)
            if value is None:
                old = aggs.pop(place, None)
                if old:
                    dirty.add(owner(old))
                return
            agg = aggs[place] = convert(key, value)
            keys_by_owner[owner(agg)].add(place)
            dirty.add(owner(agg))
        return handle

    def _dimension_handler(self, name: str):
        def handle(_partition: int, key: bytes | None, value: bytes | None) -> None:
            if key is None:
                return
            if value is None:
                self._dim_records[name].pop(key, None)
                return
            read = read_record(self.codec, name, key, value)
            if isinstance(read, Rejection):  # dead-lettered by the stream app; skipped here
                log.warning("%s record %r skipped: %s", name, key, read.message)
                return
            record = read.record
            self._dim_records[name][key] = record
            self._dirty_dims[name].add(key)
            if name == "customer":
                c = Customer.from_record(record)
                self.customers[c.customer_id] = c
                self._dirty_customers.add(c.customer_id)
            elif name == "sales_team":
                self.people[record["id"]] = SalesPerson.from_record(record)
                self._dirty_stores.update(self._keys_by_store)  # names show in every store
        return handle

    # --- flushing ----------------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Catch up, then write every mart row that changed since the last flush."""
        started = time.perf_counter()
        self.catch_up()
        result = self._write(started)
        instrumentation.FLUSH_SECONDS.observe(result.seconds)
        instrumentation.LAST_FLUSH.set(time.time())
        instrumentation.FLUSH_ROWS.labels(mart="customers").inc(result.customer_rows)
        instrumentation.FLUSH_ROWS.labels(mart="sales_team").inc(result.team_rows)
        return result

    def _write(self, started: float) -> FlushResult:
        rebuild = self.writer.last_run("rebuild")
        rebuild_id = rebuild["id"] if rebuild else None
        if rebuild_id != self._last_rebuild:  # a rebuild replaced the tables under us
            self._written.clear()
            self._last_rebuild = rebuild_id
        customers, as_of = self._customer_rows()
        team = self._team_rows()
        new_customers = self._changed(customers, CUSTOMER_KEY, "c")
        new_team = self._changed(team, TEAM_KEY, "t")
        dims = {name: [self._dim_records[name][k] for k in keys if k in self._dim_records[name]]
                for name, keys in self._dirty_dims.items()}
        self.writer.write([r for r, _ in new_customers], [r for r, _ in new_team], dims,
                          log=True)
        # Only now that the transaction committed: remember what the database holds.
        for _, (key, digest) in (*new_customers, *new_team):
            self._written[key] = digest
        self._dirty_customers.clear()
        self._dirty_stores.clear()
        self._dirty_dims.clear()
        self._as_of = as_of
        counts = self.writer.row_counts()
        instrumentation.MART_ROWS.labels(mart="customers").set(counts["customers_data_mart"])
        instrumentation.MART_ROWS.labels(mart="sales_team").set(counts["sales_team_data_mart"])
        return FlushResult(len(new_customers), len(new_team),
                           sum(len(v) for v in dims.values()), time.perf_counter() - started)

    def _customer_rows(self) -> tuple[list, date | None]:
        if not self.customer_months:
            return [], None
        as_of = self.rules.as_of or data_as_of(self.customer_months.values())
        dirty = set(self._keys_by_customer) if as_of != self._as_of else self._dirty_customers
        aggs = [self.customer_months[k] for c in dirty for k in self._keys_by_customer.get(c, ())
                if k in self.customer_months]
        return customer_rows(aggs, self.customers, self.rules, as_of), as_of

    def _team_rows(self) -> list:
        aggs = [self.team_months[k] for s in self._dirty_stores
                for k in self._keys_by_store.get(s, ()) if k in self.team_months]
        return team_rows(aggs, self.people, self.rules)

    def _changed(self, rows: Iterable, key_columns: tuple[str, ...], tag: str) -> list:
        out = []
        for row in rows:
            key = (tag, *(getattr(row, c) for c in key_columns))
            digest = hash(row)
            if self._written.get(key) != digest:
                out.append((row, (key, digest)))
        return out

    def reset(self) -> None:
        """Forget what was written: the next flush writes every row again."""
        self._written.clear()
        self._dirty_customers.update(self._keys_by_customer)
        self._dirty_stores.update(self._keys_by_store)
        for name, records in self._dim_records.items():
            self._dirty_dims[name].update(records)
