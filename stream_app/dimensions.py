"""Every worker's replica of the four dimensions, read from their compacted topics.

A background thread reads all partitions of `<ns>.dim.*` from the beginning and then follows
them, without a consumer group, so every worker holds every dimension record and the
referential checks never leave the process. It keeps only what the stream needs: the ids of
customers, stores and salespersons, and each product's prices by name.

A record that cannot be read (`salesflow.dimensions.read_record`) is skipped and remembered
with its place; the worker that owns the sales partition of the same number dead-letters it,
once (see `Worker._dead_letter_dimensions`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from salesflow.codec import Codec
from salesflow.dead_letters import Rejection
from salesflow.dimensions import key_id, read_record
from salesflow.errors import KafkaUnavailable
from salesflow.kafka import client_config, security_error, watermarks
from salesflow.sale import ProductPrice
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.stream.dimensions")


@dataclass(frozen=True, slots=True)
class BadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    rejection: Rejection


class DimensionCache:
    """Ids per dimension and product prices by name, kept current by a reader thread."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._names = {topic: name for name, topic in Topics(settings.namespace).dims.items()}
        self.customers: set[int] = set()
        self.stores: set[int] = set()
        self.sales_people: set[int] = set()
        self.products: dict[str, ProductPrice] = {}
        self._products: dict[int, tuple[str, ProductPrice]] = {}  # id -> (name, prices)
        self._named: Counter[str] = Counter()  # product ids per name
        self._bad: dict[tuple[str, int], list[BadRecord]] = {}
        self._read_up_to: dict[tuple[str, int], int] = {}  # next offset to read
        self._lock = threading.Lock()
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dimensions", daemon=True)

    def start(self, wait_seconds: float = 60.0) -> None:
        """Start following the topics; return once everything that exists now is loaded."""
        self._thread.start()
        if not self._caught_up.wait(wait_seconds):
            raise KafkaUnavailable(f"dimension topics not loaded within {wait_seconds:.0f}s")
        if self._failed is not None:
            raise self._failed
        log.info("dimensions loaded: %d customers, %d stores, %d salespersons, %d products",
                 len(self.customers), len(self.stores), len(self.sales_people),
                 len(self.products))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def bad_records(self, partition: int, modulo: int, after: dict[str, int]
                    ) -> tuple[list[BadRecord], dict[str, int]]:
        """The unreadable records of the dimension partitions p with p % modulo ==
        partition, read since `after` ("topic/p" -> next offset not looked at yet), and how
        far the reader has read them now."""
        with self._lock:
            upto = {f"{t}/{p}": n for (t, p), n in self._read_up_to.items()
                    if p % modulo == partition}
            bad = [b for (t, p), records in self._bad.items() if p % modulo == partition
                   for b in records
                   if after.get(f"{t}/{p}", 0) <= b.offset < upto[f"{t}/{p}"]]
        return bad, upto

    # --- the reader thread ---------------------------------------------------------------------

    def _run(self) -> None:
        consumer = Consumer(client_config(self._settings, **{
            "group.id": Topics(self._settings.namespace).reader_group, "enable.auto.commit": False,
            "enable.partition.eof": True}))
        try:
            behind = self._assign(consumer)
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.5):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            behind.discard((msg.topic(), msg.partition()))
                            with self._lock:
                                self._read_up_to[(msg.topic(), msg.partition())] = msg.offset()
                        elif denied := security_error(
                                error, self._settings, topic=msg.topic(),
                                group=Topics(self._settings.namespace).reader_group,
                                operation={"topic": "READ", "group": "DESCRIBE"}):
                            raise denied
                        continue
                    self.apply(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                               msg.value())
                if not behind:
                    self._caught_up.set()
        except BaseException as exc:  # the worker sees it at start, or stops on stale dims
            self._failed = exc
            self._caught_up.set()
            log.exception("the dimension reader stopped")
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> set[tuple[str, int]]:
        md = consumer.list_topics(timeout=30)
        assignment, behind = [], set()
        for topic in self._names:
            info = md.topics.get(topic)
            for partition in (info.partitions if info and not info.error else ()):
                low, _ = watermarks(consumer, TopicPartition(topic, partition), 30)
                assignment.append(TopicPartition(topic, partition, low))
                behind.add((topic, partition))
                self._read_up_to[(topic, partition)] = low
        consumer.assign(assignment)
        if not behind:
            self._caught_up.set()
        return behind

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def apply(self, topic: str, partition: int, offset: int, key: bytes | None,
              value: bytes | None) -> None:
        """One dimension record (a tombstone deletes)."""
        name = self._names.get(topic)
        if name is None:
            return
        try:
            if value is None:
                self._delete(name, key_id(key))
                return
            read = read_record(self._codec, name, key, value)
            if isinstance(read, Rejection):
                with self._lock:
                    self._bad.setdefault((topic, partition), []).append(
                        BadRecord(topic, partition, offset, key, value, read))
                log.warning("%s[%d]@%d skipped: %s", topic, partition, offset, read.message)
                return
            if name == "product":
                self._set_product(read.id, read.record["name"], read.price)
            else:
                self._ids(name).add(read.id)
        finally:
            with self._lock:
                self._read_up_to[(topic, partition)] = offset + 1

    def _ids(self, name: str) -> set[int]:
        return {"customer": self.customers, "store": self.stores,
                "sales_team": self.sales_people}[name]

    def _delete(self, name: str, record_id: int | None) -> None:
        if record_id is None:
            return
        if name == "product":
            self._set_product(record_id, None, None)
        else:
            self._ids(name).discard(record_id)

    def _set_product(self, product_id: int, name: str | None,
                     price: ProductPrice | None) -> None:
        old = self._products.pop(product_id, None)
        if old is not None:
            self._named[old[0]] -= 1
            if self._named[old[0]] <= 0:
                del self._named[old[0]]
                self.products.pop(old[0], None)
        if name is not None and price is not None:
            self._products[product_id] = (name, price)
            self._named[name] += 1
            self.products[name] = price
