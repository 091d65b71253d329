"""Every worker's replica of the four dimensions, read from their compacted topics.

A background thread reads all partitions of `<ns>.dim.*` from the beginning and then follows
them, without a consumer group, so every worker holds every dimension record (the role of a
Faust global table) and referential checks never leave the process. Faust 0.15.3's
GlobalTable over these existing topics stalled the group's partition assignment on Kafka 4.1
here, which is why this is a plain consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from salesflow.codec import Codec
from salesflow.errors import DecodeError, KafkaUnavailable
from salesflow.kafka import client_config, watermarks
from salesflow.settings import Settings
from salesflow.topics import Topics

log = logging.getLogger("salesflow.stream.dimensions")


class DimensionCache:
    """Ids per dimension (products by exact name), kept current by a reader thread."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._topics = Topics(settings.namespace).dims
        self.customers: set[int] = set()
        self.stores: set[int] = set()
        self.sales_people: set[int] = set()
        self.products: set[str] = set()
        self._product_names: dict[bytes, str] = {}
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dimensions", daemon=True)

    def start(self, wait_seconds: float = 60.0) -> None:
        """Start following the topics; return once everything that exists now is loaded."""
        self._thread.start()
        if not self._caught_up.wait(wait_seconds):
            raise KafkaUnavailable(f"dimension topics not loaded within {wait_seconds:.0f}s")
        log.info("dimensions loaded: %d customers, %d stores, %d salespersons, %d products",
                 len(self.customers), len(self.stores), len(self.sales_people),
                 len(self.products))

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        consumer = Consumer(client_config(self._settings, **{
            "group.id": "salesflow-dimensions", "enable.auto.commit": False}))
        try:
            ends = self._assign(consumer)
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=0.5):
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("dimension topics: %s", msg.error().str())
                        continue
                    self.apply(msg.topic(), msg.key(), msg.value())
                    tp = (msg.topic(), msg.partition())
                    if ends.get(tp, 0) <= msg.offset() + 1:
                        ends.pop(tp, None)
                if not ends:
                    self._caught_up.set()
        except Exception:
            log.exception("the dimension reader stopped")
            raise
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """Assign every partition from the start; the end offsets say when we are current."""
        md = consumer.list_topics(timeout=30)
        assignment, ends = [], {}
        for topic in self._topics.values():
            info = md.topics.get(topic)
            for partition in (info.partitions if info and not info.error else ()):
                low, high = watermarks(consumer, TopicPartition(topic, partition), 30)
                assignment.append(TopicPartition(topic, partition, low))
                if high > low:
                    ends[(topic, partition)] = high
        consumer.assign(assignment)
        if not ends:
            self._caught_up.set()
        return ends

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """One dimension record (a tombstone deletes)."""
        name = next((n for n, t in self._topics.items() if t == topic), None)
        if name is None or key is None:
            return
        if name == "product":
            self._apply_product(key, value)
            return
        ids = {"customer": self.customers, "store": self.stores,
               "sales_team": self.sales_people}[name]
        try:
            record_id = int(key)
        except ValueError:
            log.warning("%s: key %r is not an id", topic, key)
            return
        if value is None:
            ids.discard(record_id)
        else:
            ids.add(record_id)

    def _apply_product(self, key: bytes, value: bytes | None) -> None:
        old = self._product_names.pop(key, None)
        if value is not None:
            try:
                self._product_names[key] = self._codec.decode(value).record["name"]
            except (DecodeError, KeyError) as exc:
                log.warning("product %r unreadable: %s", key, exc)
        if old is not None or value is not None:
            self.products = set(self._product_names.values())

    def load(self, records: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """Apply (topic, key, value) records directly: for tests and tools."""
        for topic, key, value in records:
            self.apply(topic, key, value)
